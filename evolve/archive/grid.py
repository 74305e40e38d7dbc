"""The MAP-Elites grid: behaviour descriptors with fixed bins.

Bin ranges are declared up front and stored with the run, so a cell means the
same thing at evaluation 10 and at evaluation 100,000 (bins never drift with the
data). Values outside a range land in the edge bin.

Why not pyribs: its archives replace an elite whenever a single new objective
value is better, with no notion of repeated noisy evaluations of the same
genome, and the grid itself is a few lines of numpy. The noise-aware rule lives
in `elites.py`; this module only maps values to cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.errors import UserError
from evolve.record import EvalResult

DescriptorFn = Callable[[EvalResult, str], "float | None"]


def _log10(value: float | int | None) -> float | None:
    return math.log10(value) if value is not None and value > 0 else None


def count_code_lines(source: str) -> int:
    """Lines that are neither blank nor only a comment: a rough size of the idea."""
    return sum(
        1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def _throughput(result: EvalResult, source: str) -> float | None:
    if not result.tokens or not result.training_seconds or result.training_seconds <= 0:
        return None
    return _log10(result.tokens / result.training_seconds)


# name -> (what it measures, function of (result, genome source)); None = not measurable.
# A descriptor decides which cell an evaluation competes in, so a genome that can set
# one picks its own cell (an empty one, where any score is an elite). Trusted ones come
# from outside the genome: parameters from the evaluator, memory from the runner, code
# size from the source.
DESCRIPTORS: dict[str, tuple[str, DescriptorFn]] = {
    "model_size": ("log10 parameters (the evaluator)", lambda r, s: _log10(r.params)),
    "code_size": (
        "non-blank non-comment lines of the genome (its source)",
        lambda r, s: float(count_code_lines(s)),
    ),
    "memory": (
        "log10 peak host memory bytes (the runner)",
        lambda r, s: _log10(r.peak_memory_bytes),
    ),
    "tokens": ("REPORTED by the genome: log10 tokens trained", lambda r, s: _log10(r.tokens)),
    "steps": ("REPORTED by the genome: log10 optimizer steps", lambda r, s: _log10(r.steps)),
    "throughput": ("REPORTED by the genome: log10 tokens per training second", _throughput),
    "context": (
        "log2 context length the exported graph is scored at (the evaluator: the "
        "graph takes no other shape)",
        lambda r, s: math.log2(r.seq_len) if r.seq_len and r.seq_len > 0 else None,
    ),
}
# Derived from the genome's own report (see EvalResult). Nothing outside the genome can
# bound them: the token count is kept by harness code in the genome's memory, and the
# training split is readable, so a genome can train on tokens it never asked the harness
# for, or claim ones it never trained on. New runs refuse them (`reported_descriptor`);
# archives that used them still load and keep their cells.
REPORTED = frozenset({"tokens", "steps", "throughput"})


def reported_descriptor(name: str) -> UserError | None:
    """The error a new run's grid gets for a descriptor the genome reports itself, else None."""
    if name not in REPORTED:
        return None
    trusted = ", ".join(n for n in DESCRIPTORS if n not in REPORTED)
    return UserError(
        f"descriptor {name!r} is reported by the genome itself",
        "a genome could report any value and so choose its own cell of the map",
        f"use descriptors the harness measures: {trusted}",
    )


@dataclass(frozen=True)
class Descriptor:
    """One grid axis: `bins` equal bins over [low, high); outside values clamp to the edges."""

    name: str
    low: float
    high: float
    bins: int

    def __post_init__(self) -> None:
        if self.name not in DESCRIPTORS:
            known = ", ".join(sorted(DESCRIPTORS))
            raise UserError(
                f"unknown behaviour descriptor {self.name!r}",
                f"the known descriptors are: {known}",
                "use one of those names in the grid configuration",
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise UserError(
                f"descriptor {self.name}: range {self.low}..{self.high} is empty",
                fix="give a finite low < high",
            )
        if int(self.bins) != self.bins or self.bins < 1:
            raise UserError(
                f"descriptor {self.name}: bins must be a positive integer, got {self.bins}"
            )

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)

    def bin_of(self, value: float) -> int:
        """Bin k holds [edges[k], edges[k+1]); below low -> 0, at or above high -> bins-1."""
        if not math.isfinite(value):
            raise ValueError(f"descriptor {self.name}: value {value} is not finite")
        return int(np.searchsorted(self.edges[1:-1], value, side="right"))

    def measure(self, result: EvalResult, source: str) -> float | None:
        return DESCRIPTORS[self.name][1](result, source)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high, "bins": self.bins}


class Grid:
    """A fixed grid over a few descriptors."""

    def __init__(self, descriptors: Sequence[Descriptor]) -> None:
        if not descriptors:
            raise UserError("the grid needs at least one behaviour descriptor")
        names = [d.name for d in descriptors]
        if len(set(names)) != len(names):
            raise UserError(f"descriptor listed twice in the grid: {names}")
        self.descriptors = tuple(descriptors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.descriptors)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.bins for d in self.descriptors)

    @property
    def total_cells(self) -> int:
        return math.prod(self.shape)

    def describe(self, result: EvalResult, source: str) -> dict[str, float | None]:
        """Descriptor values for one evaluation; None where the result lacks the measurement."""
        return {d.name: d.measure(result, source) for d in self.descriptors}

    def cell_of(self, values: Mapping[str, float | None] | Sequence[float]) -> tuple[int, ...]:
        """Cell index per axis. Raises ValueError when a value is missing or not finite."""
        if isinstance(values, Mapping):
            missing = [n for n in self.names if values.get(n) is None]
            if missing:
                raise ValueError(f"no value for descriptor(s) {missing}")
            values = [values[n] for n in self.names]  # type: ignore[misc]
        if len(values) != len(self.descriptors):
            raise ValueError(f"expected {len(self.descriptors)} values, got {len(values)}")
        return tuple(d.bin_of(float(v)) for d, v in zip(self.descriptors, values, strict=True))

    def cell_if_known(self, values: Mapping[str, float | None]) -> tuple[int, ...] | None:
        """`cell_of(values)`, or None when a value is missing or not finite."""
        known = [values.get(n) for n in self.names]
        if any(v is None or not math.isfinite(v) for v in known):
            return None
        return self.cell_of(known)  # type: ignore[arg-type]

    def to_list(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.descriptors]

    @classmethod
    def from_list(cls, data: Sequence[Mapping[str, Any]]) -> Grid:
        try:
            return cls(
                [
                    Descriptor(d["name"], float(d["low"]), float(d["high"]), int(d["bins"]))
                    for d in data
                ]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                "the grid configuration is malformed",
                f"{e!r} in {data!r}",
                "each descriptor needs name, low, high and bins",
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self.descriptors == other.descriptors

    def __repr__(self) -> str:
        return f"Grid({list(self.descriptors)!r})"
