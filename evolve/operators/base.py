"""The shapes every variation operator shares, built-in or LLM-driven.

The engine only ever talks to operators through `Operator.vary`, so a new kind
of operator (an LLM rewrite, a code crossover) plugs in without engine changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class VariationError(Exception):
    """An operator could not make a valid child; the engine counts and records it."""


@dataclass
class Parent:
    """An elite as an operator sees it: its source plus what we measured about it.

    `mean`/`std` are val_bpb over `n` evaluations (None before any succeeded);
    `cell` is its archive cell; `extra` carries anything else an operator may
    want to show an LLM (measurements, log tail, the idea that produced it).
    """

    id: str
    source: str
    mean: float | None = None
    std: float | None = None
    n: int = 0
    cell: tuple | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Child:
    """A new genome and where it came from.

    `idea` is one human-readable line (newlines are folded into spaces so it
    fits a table row); `meta` holds operator-specific records such as an LLM
    prompt and response, and must stay JSON-serialisable.
    """

    source: str
    operator: str
    parent_ids: list[str]
    idea: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.idea = " ".join(self.idea.split())


@runtime_checkable
class Operator(Protocol):
    """A variation operator.

    `arity` is how many parents `vary` takes: 1 for a mutation, 2 for a
    crossover. `vary` must be deterministic given `rng` (all randomness comes
    from it), must not modify the parents, and raises `VariationError` when it
    cannot produce a valid child.
    """

    name: str
    arity: int

    def vary(self, parents: list[Parent], rng: random.Random) -> Child: ...


def require_parents(op: Operator, parents: list[Parent]) -> None:
    """Fail loudly when the engine hands an operator the wrong number of parents."""
    if len(parents) != op.arity:
        raise ValueError(f"{op.name} takes {op.arity} parent(s), got {len(parents)}")
