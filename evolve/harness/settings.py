"""What the trusted runner tells the two processes of an evaluation, typed on both sides.

The runner writes a `GenomeSettings` into the genome process's environment and an
`EvaluatorSettings` into the evaluator's, as JSON; each side parses its own back
with `from_env`, which refuses a missing or unknown key or a value of the wrong
type with a clear `SettingsError` (both sides come from one install, so that is a
bug, never a genome's doing: the genome process gets its settings before it runs).

Two structures, not one, because the genome reads its own environment: it gets
what training needs (budget, seed, the training split) and the limits its trusted
prologue applies, never where the held-out text is or how much of it is scored.

Stdlib only: this module runs inside the sandboxed genome process and is imported
by the command line; the check below is all the validation these flat records need.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="_ProcessSettings")


class SettingsError(ValueError):
    """The settings the runner handed over cannot be read: a harness bug, not the genome's."""


@dataclass(frozen=True, kw_only=True)
class _ProcessSettings:
    """Settings both processes need, and the JSON round trip."""

    ENV_VAR: ClassVar[str]

    device: str  # "cpu" or "cuda"
    threads: int
    vocab_size: int
    export_batch: int  # the batch of the exported graph's example input
    mem_limit: int | None  # RLIMIT_AS in bytes; None on CUDA, which reserves address space
    max_file_bytes: int  # RLIMIT_FSIZE
    sealed: tuple[str, ...]  # paths Landlock keeps closed (the held-out text and its sources)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def to_env(self) -> dict[str, str]:
        """The environment entry the runner adds for this process."""
        return {self.ENV_VAR: self.to_json()}

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Parse and check the runner's JSON; SettingsError says what is wrong."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"{cls.ENV_VAR} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{cls.ENV_VAR} is not a JSON object: {text[:80]!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - set(fields))
        if missing or unknown:
            raise SettingsError(
                f"{cls.ENV_VAR} does not match {cls.__name__}: "
                f"missing {missing or 'nothing'}, unknown {unknown or 'nothing'} "
                "(the runner and this harness must come from one install)"
            )
        values = {}
        for name, value in data.items():
            try:
                values[name] = _typed(hints[name], value)
            except TypeError:
                raise SettingsError(
                    f"{cls.ENV_VAR}: {name} is {value!r}, not {_name(hints[name])}"
                ) from None
        return cls(**values)

    @classmethod
    def from_env(cls: type[T]) -> T:
        raw = os.environ.get(cls.ENV_VAR)
        if not raw:
            raise SettingsError(f"{cls.ENV_VAR} is not set: this process is started by the runner")
        return cls.from_json(raw)


@dataclass(frozen=True, kw_only=True)
class GenomeSettings(_ProcessSettings):
    """The sandboxed genome process: its trusted prologue and `evolve.harness.session`."""

    ENV_VAR: ClassVar[str] = "EVOLVE_SESSION"

    budget: float  # seconds of training
    seed: int
    control_fd: int  # where the session's messages go
    train_path: str  # the training split, the only data this process may read
    max_procs: int  # RLIMIT_NPROC
    cgroups: tuple[str, ...]  # cgroup folders the prologue joins
    clock_start: float | None = None  # set by the prologue when the budget starts


@dataclass(frozen=True, kw_only=True)
class EvaluatorSettings(_ProcessSettings):
    """The trusted evaluator, started after the genome has exited."""

    ENV_VAR: ClassVar[str] = "EVOLVE_EVAL"

    heldout_path: str  # the held-out split that scores
    split: str  # "val" or "test"
    eval_tokens: int  # held-out tokens scored
    token_bytes_path: str | None  # bytes per token id (None: one byte each)
    verdict_fd: int  # where the verdict goes


def _typed(hint: Any, value: Any) -> Any:
    """`value` as `hint` (int, float, str, None, a union of them, or tuple[X, ...]) or TypeError.

    JSON has no tuples and writes 3.0 as 3: a list becomes a tuple, an int a float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _typed(arg, value)
            except TypeError:
                pass
        raise TypeError(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(hint)
        return tuple(_typed(args[0], item) for item in value)
    if hint is type(None) and value is None:
        return None
    if isinstance(value, bool):  # JSON true is no number
        raise TypeError(hint)
    if hint is float and isinstance(value, (int, float)):
        return float(value)
    if hint in (int, str) and isinstance(value, hint):
        return value
    raise TypeError(hint)


def _name(hint: Any) -> str:
    return str(hint) if typing.get_origin(hint) else hint.__name__
