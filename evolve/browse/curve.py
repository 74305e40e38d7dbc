"""A run's search curve: best confirmed score, coverage and QD score after each evaluation.

Replays the val evaluations in the order the run stored them through a fresh elite map
under the run's rule, so the figures after k evaluations are those the run had then
(races, confirmations and seeds count as evaluations: every one costs a slot).
The "confirmed best" is the lowest mean of any genome with at least `confirm`
evaluations, whichever strategy kept it, so strategies are compared like for like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evolve.archive import ElitesMap, RunArchive
from evolve.archive.elites import qd_score


@dataclass(frozen=True)
class Point:
    evals: int  # val evaluations so far, failures included
    best: float | None  # lowest mean among genomes with >= confirm evaluations
    best_genome: str | None
    coverage: float
    qd_score: float
    true_best: float | None = None  # the surrogate's noise-free mean of best_genome, if known


def search_curve(archive: RunArchive, truth: Callable[[str], float] | None = None) -> list[Point]:
    """One point per val evaluation; `truth(genome_hash)` adds a noise-free score (surrogate)."""
    rule = archive.rule
    emap = ElitesMap(archive.grid.total_cells, rule)
    records = sorted(archive.evaluations(), key=lambda r: int(r.seq))
    points: list[Point] = []
    best: tuple[float, str] | None = None
    known: dict[str, float] = {}
    for record in records:
        if record.sealed or record.status.infrastructure:
            continue
        bpb, cell = record.val_bpb, record.cell
        if cell is not None and bpb is not None and record.comparable:
            emap.add(record.genome, cell, bpb, record.id, record.descriptors)
            stats = emap.genomes[record.genome]
            if stats.n >= rule.confirm_n or (best and best[1] == stats.genome):
                best = _lowest(emap, rule.confirm_n)
        true_best = None
        if best is not None and truth is not None:
            if best[1] not in known:
                known[best[1]] = truth(best[1])
            true_best = known[best[1]]
        points.append(
            Point(
                len(points) + 1,
                best[0] if best else None,
                best[1] if best else None,
                emap.coverage,
                qd_score(emap.elites(), rule.offset),
                true_best,
            )
        )
    return points


def _lowest(emap: ElitesMap, confirm: int) -> tuple[float, str] | None:
    confirmed = [s for s in emap.genomes.values() if s.n >= confirm]
    if not confirmed:
        return None
    stats = min(confirmed, key=lambda s: s.mean)
    return stats.mean, stats.genome


def at(points: list[Point], evals: int) -> Point | None:
    """The curve after `evals` evaluations (the last point if the run made fewer)."""
    if not points:
        return None
    return points[min(evals, len(points)) - 1]


def evals_to_reach(points: list[Point], target: float, true: bool = False) -> int | None:
    """The first evaluation count whose confirmed best is at or below `target` (None: never)."""
    for point in points:
        value = point.true_best if true else point.best
        if value is not None and value <= target:
            return point.evals
    return None


def coverage_line(archive: RunArchive, most: int = 12) -> str | None:
    """Coverage after each generation, from the logbook (at most `most` generations shown,
    evenly spaced, the last always): how fast the search spreads over the grid."""
    rows = sorted(archive.logbook(), key=lambda row: int(row["gen"]))
    if not rows:
        return None
    step = max(1, -(-len(rows) // most))
    shown = rows[::step] if rows[::step][-1] is rows[-1] else [*rows[::step], rows[-1]]
    cells = archive.grid.total_cells
    parts = [
        f"{int(r['gen'])}: {r['coverage']:.1%} ({round(r['coverage'] * cells)})" for r in shown
    ]
    return "coverage by generation (cells filled): " + ", ".join(parts)
