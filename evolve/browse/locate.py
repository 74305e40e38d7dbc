"""Finding a run by name or path, and an evaluation or genome in it by id or hash prefix.

Runs are opened read-only (no lock), so browsing never gets in the way of the
writer. Every "not found" is a UserError that says what exists instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.archive import RunArchive
from evolve.archive.pending import PendingTasks, Task
from evolve.errors import UserError
from evolve.record import Evaluation

EVAL_ID = re.compile(r"^e\d{6,}$")
HASH_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")


def run_path(run: str, archive_dir: str | Path) -> Path:
    """RUN may be a name under the archive dir or a path to a run folder."""
    candidate = Path(run)
    return candidate if candidate.is_dir() or "/" in run else Path(archive_dir) / run


def open_run(run: str, archive_dir: str | Path = "archive") -> RunArchive:
    """The run opened read-only, or a UserError naming the runs that do exist."""
    path = run_path(run, archive_dir)
    if not path.exists():
        names = sorted(q.parent.name for q in Path(archive_dir).glob("*/config.json"))
        known = (
            f"runs under {archive_dir}: {', '.join(names)}"
            if names
            else (f"there are no runs under {archive_dir}")
        )
        raise UserError(
            f"no run {run!r}",
            known,
            "give a run name from `evolve runs --archive-dir DIR`, or the path of a run folder",
        )
    return RunArchive.open(path)


@dataclass(frozen=True)
class Target:
    """What an id names: a genome and the evaluation meant (for a hash prefix: its first one).

    record is None when the id names a planned evaluation that has not finished (task).
    """

    genome: str
    record: Evaluation | None = None
    task: Task | None = None

    @property
    def id(self) -> str:
        if self.record is not None:
            return self.record.id
        return self.task.id if self.task is not None else self.genome[:12]

    def field(self, name: str, default: Any = None) -> Any:
        """A record field, falling back to the pending task's field of the same name."""
        if self.record is not None:
            return getattr(self.record, name, default)
        if self.task is not None:
            return getattr(self.task, name, default)
        return default

    @property
    def parents(self) -> list[str]:
        return [p for p in self.field("parents", []) or [] if p != self.genome]


def resolve(archive: RunArchive, ident: str) -> Target:
    """An evaluation id (e000012, finished or pending) or a genome hash prefix (>= 6 hex)."""
    ident = ident.strip()
    if EVAL_ID.match(ident):
        record = archive.get(ident)
        if record is not None:
            return Target(record.genome, record)
        task = next((t for t in PendingTasks(archive.path).all() if t.id == ident), None)
        if task is not None:
            return Target(task.genome, None, task)
        raise UserError(
            f"no evaluation {ident} in run {archive.name}",
            f"the run has {archive.count()} evaluation(s)",
            f"`evolve show {archive.name}` lists the elites and their ids",
        )
    prefix = ident.lower()
    if not HASH_PREFIX.match(prefix):
        raise UserError(
            f"{ident!r} is not an evaluation id or a genome hash",
            "ids look like e000012; genome hashes are 6 to 64 hex characters",
            f"`evolve show {archive.name}` lists the elites and their ids",
        )
    matches = sorted(g for g in known_genomes(archive) if g.startswith(prefix))
    if not matches:
        raise UserError(
            f"no genome {prefix} in run {archive.name}",
            fix=f"`evolve show {archive.name}` lists the elites and their genomes",
        )
    if len(matches) > 1:
        shown = ", ".join(m[:12] for m in matches[:5]) + (" …" if len(matches) > 5 else "")
        raise UserError(
            f"genome prefix {prefix} is ambiguous in run {archive.name}",
            f"{len(matches)} genomes start with it: {shown}",
            "give more hex characters, or an evaluation id",
        )
    return genome_target(archive, matches[0])


def genome_target(archive: RunArchive, genome: str) -> Target:
    """A genome with its first evaluation (the one that introduced it), or its pending task."""
    records = archive.evaluations_of(genome)
    if records:
        return Target(genome, min(records, key=lambda r: r.id))
    task = next((t for t in PendingTasks(archive.path).all() if t.genome == genome), None)
    return Target(genome, None, task)


def known_genomes(archive: RunArchive) -> list[str]:
    """Every genome stored in the run: evaluated, pending, or seed."""
    try:
        names = os.listdir(archive.genomes.folder)
    except FileNotFoundError:
        return []
    return [n[: -len(".py")] for n in names if n.endswith(".py") and not n.startswith(".")]


def first_ids(archive: RunArchive) -> dict[str, str]:
    """genome -> id of its first evaluation, from the shard index (no records parsed twice)."""
    first: dict[str, int] = {}
    for members in archive.shards.index().values():
        for number, genome in members.items():
            if genome not in first or number < first[genome]:
                first[genome] = number
    return {g: f"e{n:06d}" for g, n in first.items()}
