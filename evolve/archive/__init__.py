"""The archive: one durable directory per run, and the noise-aware MAP-Elites map."""

from evolve.archive.elites import Decision, Elite, EliteRule, ElitesMap, GenomeStats, qd_score
from evolve.archive.grid import DESCRIPTORS, Descriptor, Grid, count_code_lines
from evolve.archive.layout import RunInfo, list_runs
from evolve.archive.store import RunArchive

__all__ = [
    "DESCRIPTORS",
    "Decision",
    "Descriptor",
    "Elite",
    "EliteRule",
    "ElitesMap",
    "GenomeStats",
    "Grid",
    "RunArchive",
    "RunInfo",
    "count_code_lines",
    "list_runs",
    "qd_score",
]
