"""What the LLM is shown besides the parents' code, read from the run's archive.

The lineage says which ideas led to a parent and what each did to val_bpb, so
the LLM builds on what worked; recent failures with their reasons keep it from
repeating them; elites of other cells show other directions that work; the
facts (device, budget, the parent's measurements, the noise level) are what a
researcher reasons from; the empty or weakly held neighbour cells are where an
aimed mutation can send a child.

Only val-split evaluations are read: a test-split score (the sealed score of a
confirmed best) never reaches the LLM, or the search would learn from it. Every
text here was written by a genome or an LLM: the prompt shows it neutralised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evolve.archive import RunArchive
from evolve.archive.grid import Grid
from evolve.archive.shards import format_id
from evolve.logtail import tail
from evolve.operators.base import Parent
from evolve.operators.llm.aim import Niche, in_flight, niches
from evolve.operators.llm.facts import Facts, parent_facts
from evolve.record import Evaluation
from evolve.runner.curve import brief

SCAN_FOR_FAILURES = 300  # newest records looked at when collecting recent failures
LOG_TAIL_CHARS = 4000


@dataclass
class Step:
    """One change in a lineage: the idea, and val_bpb before and after it (None: unknown)."""

    idea: str
    operator: str
    before: float | None
    after: float | None


@dataclass
class RunContext:
    lineage: dict[str, list[Step]] = field(default_factory=dict)  # parent id -> oldest first
    log_tails: dict[str, str] = field(default_factory=dict)  # parent id -> last log lines
    curves: dict[str, str] = field(default_factory=dict)  # parent id -> "1s 4.1, 2s 3.2, ..."
    elites: list[dict[str, Any]] = field(default_factory=list)  # from other cells, best first
    failures: list[dict[str, Any]] = field(default_factory=list)  # newest first
    facts: dict[str, Facts] = field(default_factory=dict)  # parent id -> device, budget, numbers
    niches: dict[str, list[Niche]] = field(default_factory=dict)  # parent id -> aim candidates
    grid: Grid | None = None  # what the niches' cells mean


def gather(
    archive: RunArchive,
    parents: list[Parent],
    *,
    depth: int = 5,
    log_lines: int = 40,
    n_elites: int = 3,
    n_failures: int = 5,
) -> RunContext:
    """Read the context for these parents. The caller holds the archive's lock."""
    reader = _Reader(archive)
    context = RunContext()
    for parent in parents:
        context.lineage[parent.id] = lineage(reader, parent.id, depth)
        context.log_tails[parent.id] = log_tail(reader, parent, log_lines)
        context.curves[parent.id] = parent_curve(reader, parent.id)
        context.facts[parent.id] = parent_facts(reader.of(parent.id), archive.rule, parent.n)
    elites = archive.elites()
    context.grid = archive.grid
    flying = in_flight(archive.path / "pending")
    context.niches = {p.id: niches(archive.grid, elites, p, flying) for p in parents}
    context.elites = other_elites(reader, parents, n_elites)
    context.failures = recent_failures(archive, n_failures)
    return context


class _Reader:
    """Val-split evaluations by genome, each genome read from disk once per context."""

    def __init__(self, archive: RunArchive) -> None:
        self.archive = archive
        self._memo: dict[str, list[Evaluation]] = {}

    def of(self, genome: str) -> list[Evaluation]:
        if genome not in self._memo:
            self._memo[genome] = [r for r in self.archive.evaluations_of(genome) if not r.sealed]
        return self._memo[genome]


def origin(records: list[Evaluation]) -> Evaluation | None:
    """The record that first evaluated a genome, of its records in id order (a repeat
    evaluation says nothing about where the genome came from)."""
    return next((r for r in records if not r.is_repeat), None)


def score(records: list[Evaluation]) -> float | None:
    """Mean val_bpb of a genome's successful val-split evaluations, of its records (a sealed
    test-split score never reaches the search)."""
    values = [v for r in records if not r.sealed and (v := r.val_bpb) is not None]
    return sum(values) / len(values) if values else None


def lineage(reader: _Reader, genome: str, depth: int) -> list[Step]:
    steps: list[Step] = []
    for _ in range(depth):
        record = origin(reader.of(genome))
        if record is None or not record.parents:
            break
        parent = record.parents[0]
        steps.append(
            Step(record.idea, record.operator, score(reader.of(parent)), score(reader.of(genome)))
        )
        genome = parent
    return steps[::-1]


def parent_curve(reader: _Reader, genome: str) -> str:
    """The parent's latest reported training curve in brief (numbers only, checked by the
    runner's channel): a few smoothed losses by training seconds."""
    for record in reversed(reader.of(genome)):
        if record.ok and record.result.curve:
            return brief(record.result.curve, float(record.result.budget or 0.0) or 1.0)
    return ""


def log_tail(reader: _Reader, parent: Parent, lines: int) -> str:
    """The end of the parent's latest training log (where its loss curve ended up)."""
    if lines <= 0:
        return ""
    eval_ids = list(parent.extra.get("eval_ids") or [])
    if not eval_ids:
        record = origin(reader.of(parent.id))
        eval_ids = [record.id] if record else []
    for eval_id in reversed(eval_ids):
        try:
            text, _ = tail(reader.archive.log_path(eval_id), 2 * LOG_TAIL_CHARS)
        except ValueError:  # not an evaluation id
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:])[-LOG_TAIL_CHARS:]
    return ""


def other_elites(reader: _Reader, parents: list[Parent], n: int) -> list[dict[str, Any]]:
    own = {p.id for p in parents}
    cells = {tuple(p.cell) for p in parents if p.cell is not None}
    found = []
    for elite in sorted(reader.archive.elites(), key=lambda e: e.mean):
        if len(found) >= n:
            break
        if elite.genome in own or tuple(elite.cell) in cells:
            continue
        record = origin(reader.of(elite.genome))
        found.append(
            {
                "genome": elite.genome,
                "mean": elite.mean,
                "std": elite.std,
                "n": elite.n,
                "cell": list(elite.cell),
                "idea": record.idea if record else "",
            }
        )
    return found


def recent_failures(archive: RunArchive, n: int) -> list[dict[str, Any]]:
    if n <= 0:
        return []
    numbers = sorted(
        (num for members in archive.shards.index().values() for num in members), reverse=True
    )[:SCAN_FOR_FAILURES]
    found = []
    for number in numbers:
        record = archive.get(format_id(number))
        if record is None or record.ok or record.status.infrastructure:
            continue  # a lost node or a stopped run is no idea to avoid
        if record.sealed:
            continue  # how the test split went stays out of the search
        found.append(
            {
                "idea": record.idea,
                "status": record.status.value,
                "reason": record.result.reason,
                "operator": record.operator,
            }
        )
        if len(found) >= n:
            break
    return found
