"""A parent and the run's history as the LLM operators see them, from any open archive.

The engine's Proposer reads through a writer; `evolve prompt` reads a run
read-only (no lock, while the run writes). Both build a parent from an elite
with `elite_parent`, and both gather the context with the same `gather`, so
what the command prints is what the operator would send.
"""

from __future__ import annotations

import statistics

from evolve.archive import Elite, RunArchive
from evolve.operators.base import Parent, VariationError
from evolve.operators.dedupe import normalized_hash
from evolve.operators.llm.context import RunContext, gather


def elite_parent(archive: RunArchive, elite: Elite) -> Parent:
    """An elite as an operator's parent: its source, scores, cell, descriptors, evaluations."""
    return Parent(
        id=elite.genome,
        source=archive.genome_source(elite.genome),
        mean=elite.mean,
        std=elite.std,
        n=elite.n,
        cell=elite.cell,
        extra={"descriptors": elite.descriptors, "eval_ids": list(elite.eval_ids)},
    )


def genome_parent(archive: RunArchive, genome: str) -> Parent:
    """Any genome of the run as a parent: its elite if it holds a cell, else from its records
    (n, mean and std of its ok val-split scores, its cell and descriptors from the first)."""
    for elite in archive.elites():
        if elite.genome == genome:
            return elite_parent(archive, elite)
    records = [r for r in archive.evaluations_of(genome) if r.ok and not r.sealed and r.comparable]
    scores = [s for r in records if (s := r.val_bpb) is not None]
    first = records[0] if records else None
    cell = tuple(first.cell) if first is not None and first.cell is not None else None
    return Parent(
        id=genome,
        source=archive.genome_source(genome),
        mean=statistics.fmean(scores) if scores else None,
        std=statistics.stdev(scores) if len(scores) > 1 else (0.0 if scores else None),
        n=len(scores),
        cell=cell,
        extra={
            "descriptors": (first.descriptors if first else None) or {},
            "eval_ids": [r.id for r in records],
        },
    )


class ArchiveView:
    """The RunView of a read-only archive: what `evolve prompt` builds its messages from."""

    def __init__(self, archive: RunArchive) -> None:
        self.archive = archive
        self._seen: set[str] | None = None

    def context(self, parents: list[Parent], **limits: int) -> RunContext:
        return gather(self.archive, parents, **limits)

    def is_known(self, source: str) -> bool:
        if self._seen is None:
            genomes = {r.genome for r in self.archive.evaluations()}
            self._seen = {normalized_hash(self.archive.genome_source(g)) for g in genomes}
        try:
            return normalized_hash(source) in self._seen
        except VariationError:
            return False
