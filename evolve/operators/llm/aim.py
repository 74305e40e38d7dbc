"""Aimed mutation: ask for a child that lands in an empty or weakly held neighbour cell.

An archive knows what a lineage cannot: which niches are still empty. A share of
LLM mutations (`aim_share` in `[llm]`) names one neighbour of the parent's cell
that is empty (or, when none is, held by an elite worse than the parent), says
in plain words what landing there takes ("about 3.2x fewer parameters"), and
asks for a child there that also lowers val_bpb. The target is recorded with
the child, so a run can tell how often aimed children land where they were sent.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.archive.atomic import read_json
from evolve.archive.elites import Elite
from evolve.archive.grid import DESCRIPTORS, Descriptor, Grid
from evolve.errors import UserError
from evolve.operators.base import Parent

# descriptor -> (what it counts, word for more, word for fewer, log10 axis)
WORDS: dict[str, tuple[str, str, str, bool]] = {
    "model_size": ("parameters", "more", "fewer", True),
    "code_size": ("code lines", "more", "fewer", False),  # non-blank, non-comment
    "tokens": ("tokens trained", "more", "fewer", True),
    "memory": ("peak memory", "more", "less", True),
    "steps": ("optimizer steps", "more", "fewer", True),
    "throughput": ("tokens per training second", "more", "fewer", True),
}


@dataclass(frozen=True)
class Niche:
    """A neighbour cell a child could be sent to; holder_mean None: nobody holds it.

    `aimed`: children already sent there and not yet scored (proposals run ahead of the
    slots, so without this every child of a parent would be sent to the same empty cell).
    """

    cell: tuple[int, ...]
    holder_mean: float | None = None
    aimed: int = 0


@dataclass(frozen=True)
class Target:
    """The niche an aimed prompt names, and what it means in words (one line per axis)."""

    cell: tuple[int, ...]
    holder_mean: float | None
    lines: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cell": list(self.cell), "held_by": self.holder_mean}


def niches(
    grid: Grid,
    elites: Iterable[Elite],
    parent: Parent,
    in_flight: Mapping[tuple[int, ...], int] | None = None,
) -> list[Niche]:
    """Neighbours of the parent's cell (one bin away on any axes) that are empty or weakly held.

    Weakly held: the elite there has a worse mean than the parent, so a child that keeps the
    parent's quality would take it. `in_flight` counts children on their way to each cell.
    """
    if parent.cell is None:
        return []
    held = {tuple(e.cell): e for e in elites}
    in_flight = in_flight or {}
    found = []
    for offset in itertools.product((-1, 0, 1), repeat=len(grid.shape)):
        cell = tuple(c + o for c, o in zip(parent.cell, offset, strict=True))
        if not any(offset) or any(not 0 <= c < n for c, n in zip(cell, grid.shape, strict=True)):
            continue
        elite, aimed = held.get(cell), in_flight.get(cell, 0)
        if elite is None:
            found.append(Niche(cell, None, aimed))
        elif parent.mean is not None and elite.mean > parent.mean and elite.genome != parent.id:
            found.append(Niche(cell, elite.mean, aimed))
    return found


def pick(candidates: list[Niche], rng: random.Random) -> Niche | None:
    """An empty neighbour if there is one, else a weakly held one, and among those one that
    the fewest children in flight are already sent to; None when there is no candidate."""
    if not candidates:
        return None
    rank = min((n.holder_mean is not None, n.aimed) for n in candidates)
    return rng.choice([n for n in candidates if (n.holder_mean is not None, n.aimed) == rank])


def in_flight(pending: Path) -> Counter[tuple[int, ...]]:
    """Target cells of the aimed children in `pending/` (written before they run, removed once
    scored). A file the engine removes while we read is simply no longer in flight."""
    found: Counter[tuple[int, ...]] = Counter()
    for path in sorted(pending.glob("*.json")) if pending.is_dir() else []:
        try:
            cell = ((read_json(path).get("meta") or {}).get("target") or {}).get("cell")
        except (OSError, ValueError, AttributeError, UserError):
            continue
        if isinstance(cell, list) and all(isinstance(c, int) for c in cell):
            found[tuple(cell)] += 1
    return found


def target(grid: Grid, parent: Parent, niche: Niche) -> Target:
    values = parent.extra.get("descriptors") or {}
    lines = tuple(
        describe(d, values.get(d.name), parent.cell[i] if parent.cell else None, niche.cell[i])
        for i, d in enumerate(grid.descriptors)
    )
    return Target(niche.cell, niche.holder_mean, lines)


def describe(axis: Descriptor, value: float | None, own_bin: int | None, bin_: int) -> str:
    """One axis of the target in words: its range, where the parent is, and the change asked."""
    what, more, fewer, log = WORDS.get(axis.name, (axis.name, "more", "fewer", False))
    edges = [float(e) for e in axis.edges]
    middle = (edges[bin_] + edges[bin_ + 1]) / 2
    if value is None and own_bin is not None:
        value = (edges[own_bin] + edges[own_bin + 1]) / 2
    shown = (lambda x: _amount(axis.name, 10**x)) if log else (lambda x: f"{x:.0f}")
    if axis.bins == 1:
        span = "any value"
    elif bin_ == 0:
        span = f"below {shown(edges[1])}"
    elif bin_ == axis.bins - 1:
        span = f"{shown(edges[-2])} or more"
    else:
        span = f"{shown(edges[bin_])} to {shown(edges[bin_ + 1])}"
    line = f"{axis.name}: {span} {what}"
    if value is None:
        return line
    line += f" (the current program: {shown(value)})"
    if own_bin == bin_:
        return line + ": keep it in this range"
    if log:
        ratio = 10 ** (middle - value)
        word, factor = (more, ratio) if ratio >= 1 else (fewer, 1 / ratio)
        return line + f": about {factor:.2g}x {word} {what}"
    delta = middle - value
    return line + f": about {abs(delta):.0f} {more if delta >= 0 else fewer} {what}"


def _amount(name: str, value: float) -> str:
    if name == "memory":
        for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= size:
                return f"{value / size:.3g} {suffix}"
        return f"{value:.0f} B"
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def section(grid: Grid, parent: Parent, aim: Target) -> str:
    """The prompt's aim section: where the parent is, the niche asked for, what it means."""
    axes = ", ".join(f"{d.name} ({DESCRIPTORS[d.name][0]})" for d in grid.descriptors)
    where = _cell(parent.cell) if parent.cell is not None else "(unknown)"
    held = (
        "is empty"
        if aim.holder_mean is None
        else f"is held by a program with val_bpb {aim.holder_mean:.4f}, worse than the current one"
    )
    lines = [
        f"## Aim: niche {_cell(aim.cell)}",
        f"The run keeps the best program of each niche of a map over {axes}. The current "
        f"program is in niche {where}; niche {_cell(aim.cell)} next to it {held}. "
        "Landing there means:",
    ]
    lines += [f"- {line}" for line in aim.lines]
    return "\n".join(lines)


def task_sentence(aim: Target) -> str:
    return (
        f"Write a child that lands in niche {_cell(aim.cell)} (see the aim above) and lowers "
        "val_bpb within the same time budget."
    )


def _cell(cell: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(c)) for c in cell) + ")"
