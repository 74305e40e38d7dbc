"""Operator registry and the weighted operator mix that picks one operator per child.

Config names operators by string (`{"hyper_mutate": 1.0, "hyper_crossover": 0.5}`);
LLM operators join later through `register_operator` without touching this file.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from evolve.config import RunConfig, default
from evolve.errors import UserError
from evolve.operators.base import Operator
from evolve.operators.hyperparams import HyperparamCrossover, HyperparamMutation

OperatorFactory = Callable[..., Operator]

_REGISTRY: dict[str, OperatorFactory] = {
    "hyper_mutate": HyperparamMutation,
    "hyper_crossover": HyperparamCrossover,
}
DEFAULT_OPERATORS: dict[str, float] = default("operators")
DEFAULT_CXPB = RunConfig.cxpb


def register_operator(name: str, factory: OperatorFactory, *, replace: bool = False) -> None:
    """Make `name` usable in config. `factory(name=name, **options)` must return an Operator."""
    if name in _REGISTRY and not replace:
        raise ValueError(f"operator {name!r} is already registered")
    _REGISTRY[name] = factory


def unregister_operator(name: str) -> None:
    """Forget a registered operator (plugins and tests clean up with this)."""
    _REGISTRY.pop(name, None)


def known_operators() -> list[str]:
    return sorted(_REGISTRY)


def make_operator(name: str, **options: Any) -> Operator:
    """Build a registered operator; unknown names and bad options are the user's to fix."""
    if name not in _REGISTRY:
        raise UserError(
            f"unknown operator {name!r}",
            f"known operators: {', '.join(known_operators())}",
            "fix the name in the config's operators table",
        )
    try:
        op = _REGISTRY[name](name=name, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad options for operator {name!r}: {options}", str(exc)) from None
    if not isinstance(op, Operator) or op.arity not in (1, 2):
        raise TypeError(f"factory for {name!r} did not return an Operator of arity 1 or 2")
    return op


class OperatorMix:
    """Chooses the operator for each child.

    With probability `cxpb`, and when at least two parents are available, a
    crossover (arity 2) is drawn by weight; otherwise a mutation (arity 1).
    A mix needs at least one mutation, because a young archive has one elite.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        cxpb: float = DEFAULT_CXPB,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        weights = dict(DEFAULT_OPERATORS if weights is None else weights)
        options = dict(options or {})
        if not 0 <= cxpb <= 1:
            raise UserError(f"cxpb must be between 0 and 1, got {cxpb}")
        for name, w in weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise UserError(f"operator weight for {name!r} must be a number >= 0, got {w!r}")
        for name in options:
            if name not in weights:
                raise UserError(f"options given for operator {name!r}, which has no weight")
        ops = {name: make_operator(name, **options.get(name, {})) for name in weights}
        self.cxpb = cxpb
        self.mutations = [
            (ops[n], float(w)) for n, w in weights.items() if ops[n].arity == 1 and w > 0
        ]
        self.crossovers = [
            (ops[n], float(w)) for n, w in weights.items() if ops[n].arity == 2 and w > 0
        ]
        if not self.mutations:
            raise UserError(
                "no mutation operator has a positive weight",
                "the first generations have a single parent, which only a mutation can use",
                f"give one of {', '.join(known_operators())} a weight above 0",
            )

    @property
    def operators(self) -> list[Operator]:
        return [op for op, _ in self.mutations + self.crossovers]

    def choose(self, n_available: int, rng: random.Random) -> Operator:
        """The operator for the next child, given how many distinct elites exist."""
        if self.crossovers and n_available >= 2 and rng.random() < self.cxpb:
            return _draw(self.crossovers, rng)
        return _draw(self.mutations, rng)


def _draw(pairs: list[tuple[Operator, float]], rng: random.Random) -> Operator:
    return rng.choices([op for op, _ in pairs], weights=[w for _, w in pairs])[0]
