"""A live, read-only index of one run for the web viewer: a slim row per evaluation, in memory.

A page of a 100,000-evaluation run must answer in well under a second, and the
records live in 200+ TinyDB shards of ~500 records each. Parsing them all per
request would take seconds, so each shard is parsed once and kept as slim rows
(no result dict, no hardware, no log path); afterwards only shards whose stat
(inode, mtime, size) changed are read again. Records are append-only, so a
changed shard only adds rows. The run is opened read-only: no lock, ever.
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evolve.archive import RunArchive
from evolve.archive.elites import GenomeStats
from evolve.archive.layout import list_runs
from evolve.archive.shards import Record
from evolve.errors import UserError
from evolve.record import off_class

StatKey = tuple[int, int, int]


class NotFound(UserError):
    """A run, id or page that does not exist: answered with 404 and this message."""


TOOK_CELL = ("new_cell", "replaced")


@dataclass(slots=True)
class Row:
    """What the viewer needs of one evaluation record, and nothing it can fetch when asked."""

    number: int
    seq: int
    genome: str
    parent: str | None  # the first parent genome that is not the genome itself
    status: str
    bpb: float | None  # val_bpb when ok and finite
    counted: bool  # counted in the genome's statistics as the elite map counts it
    decision: str | None
    operator: str
    generation: int | None
    idea: str
    params: int | None
    origin: dict[str, Any] | None
    llm: bool  # the record stores an LLM prompt or reply

    @property
    def id(self) -> str:
        return f"e{self.number:06d}"


def slim(number: int, record: Record) -> Row:
    """Read from the stored dict, not an Evaluation: the index parses every record of a run
    (100,000 and more) once, and a full Evaluation per record would cost more than the row."""
    result = record.get("result") or {}
    value = result.get("val_bpb")
    ok = record.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)
    parents = [p for p in record.get("parents") or [] if p != record.get("genome")]
    origin = record.get("origin")
    generation = record.get("generation")
    return Row(
        number=number,
        seq=int(record.get("seq") or 0),
        genome=str(record.get("genome", "")),
        parent=str(parents[0]) if parents else None,
        status=str(record.get("status", "?")),
        bpb=float(value) if ok else None,
        counted=ok and not off_class(result.get("hardware") or {}),
        decision=record.get("decision"),
        operator=str(record.get("operator") or ""),
        generation=generation if isinstance(generation, int) else None,
        idea=str(record.get("idea") or ""),
        params=result.get("params") if isinstance(result.get("params"), int) else None,
        origin=origin if isinstance(origin, dict) else None,
        llm=bool(record.get("prompt_sha256") or record.get("response_sha256")),
    )


@dataclass(frozen=True)
class Series:
    """Every evaluation in recorded order as arrays, for the progress plot (nan: failed)."""

    numbers: np.ndarray
    bpb: np.ndarray
    took: np.ndarray


def stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class RunIndex:
    """One run opened read-only, with its rows kept current by `refresh()`.

    Callers hold `lock` while they use it: TinyDB handles and the caches are not thread-safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.archive = RunArchive.open(path)
        self.lock = threading.Lock()
        self._shards: dict[int, tuple[StatKey, int]] = {}  # shard -> (stat, rows seen)
        self.rows: dict[int, Row] = {}
        self.by_genome: dict[str, list[Row]] = {}
        self.children: dict[str, list[str]] = {}  # parent genome -> child genomes, first seen first
        self.statuses: Counter[str] = Counter()
        self.operators: Counter[str] = Counter()
        self._order: list[Row] = []  # recorded order (seq); sorted lazily when a row came late
        self._sorted = True
        self._columns = (array("q"), array("d"), array("b"))  # the series, appended as rows come
        self._code_lines: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.archive.name

    def refresh(self) -> None:
        """Read the shards that changed on disk since the last call (all of them the first time)."""
        shards = self.archive.shards
        current = shards.shards()
        if set(self._shards) - set(current):  # a shard vanished: not append-only, start over
            self._reset()
        for shard in current:
            key = stat_key(shards.path(shard))
            seen = self._shards.get(shard)
            if seen is not None and seen[0] == key:
                continue
            records = shards.read_shard(shard)
            if seen is not None and len(records) < seen[1]:
                self._reset()
                self.refresh()
                return
            fresh = sorted(n for n in records if n not in self.rows)
            for number in fresh:
                self._add(slim(number, records[number]))
            self._shards[shard] = (key, len(records))

    def _reset(self) -> None:
        self._shards.clear()
        self.rows.clear()
        self.by_genome.clear()
        self.children.clear()
        self.statuses.clear()
        self.operators.clear()
        self._order.clear()
        self._sorted = True
        self._columns = (array("q"), array("d"), array("b"))

    def _add(self, row: Row) -> None:
        self.rows[row.number] = row
        self.statuses[row.status] += 1
        self.operators[row.operator or "-"] += 1
        if self._order and (self._order[-1].seq, self._order[-1].number) > (row.seq, row.number):
            self._sorted = False
        self._order.append(row)
        numbers, bpb, took = self._columns
        numbers.append(row.number)
        bpb.append(math.nan if row.bpb is None else row.bpb)
        took.append(row.decision in TOOK_CELL)
        rows = self.by_genome.setdefault(row.genome, [])
        first = not rows
        rows.append(row)
        if len(rows) > 1 and rows[-2].number > row.number:
            rows.sort(key=lambda r: r.number)
        if first and row.parent:
            self.children.setdefault(row.parent, []).append(row.genome)

    # --- questions the pages ask ---------------------------------------------------------

    def first(self, genome: str) -> Row | None:
        """The evaluation that introduced `genome` into the run."""
        rows = self.by_genome.get(genome)
        return rows[0] if rows else None

    def stats(self, genome: str) -> GenomeStats:
        """n, mean, std of a genome's counted scores, as the elite map counts them."""
        stats = GenomeStats(genome, cell=())
        for row in self.by_genome.get(genome, ()):
            if row.counted and row.bpb is not None:
                stats.push(row.bpb, row.id)
        return stats

    def code_lines(self, genome: str) -> int | None:
        from evolve.archive import count_code_lines

        if genome not in self._code_lines:
            try:
                self._code_lines[genome] = count_code_lines(self.archive.genome_source(genome))
            except UserError:
                return None
        return self._code_lines[genome]

    def ordered(self) -> list[Row]:
        """Every evaluation in the order it was recorded (the caller must not change it)."""
        if not self._sorted:
            self._order.sort(key=lambda r: (r.seq, r.number))
            self._sorted = True
            self._columns = (
                array("q", (r.number for r in self._order)),
                array("d", (math.nan if r.bpb is None else r.bpb for r in self._order)),
                array("b", (r.decision in TOOK_CELL for r in self._order)),
            )
        return self._order

    def series(self) -> Series:
        """The progress plot's data: columns kept up to date as rows arrive, copied out."""
        self.ordered()
        numbers, bpb, took = self._columns
        return Series(
            np.array(numbers, dtype=np.int64),
            np.array(bpb, dtype=np.float64),
            np.array(took, dtype=np.bool_),
        )

    def close(self) -> None:
        self.archive.close()


class RunCache:
    """The runs of one archive directory, each indexed once and kept open while the server runs."""

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = archive_dir
        self._runs: dict[str, RunIndex] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return [info.name for info in list_runs(self.archive_dir)]

    def get(self, name: str) -> RunIndex:
        """The index of run `name`, which must be one of the runs listed under the archive dir
        (the name is looked up, never joined onto a path as given)."""
        with self._lock:
            index = self._runs.get(name)
            if index is not None and index.path.is_dir():
                return index
            info = next((i for i in list_runs(self.archive_dir) if i.name == name), None)
            if info is None or info.config is None:
                raise NotFound(f"no run {name!r} under {self.archive_dir}")
            index = RunIndex(info.path)
            self._runs[name] = index
            return index

    def warm(self) -> None:
        """Index every run now (a background thread at start), so the first page is fast too:
        parsing a 100,000-evaluation run's shards takes seconds, once."""
        for name in self.names():
            try:
                index = self.get(name)
                with index.lock:
                    index.refresh()
            except UserError:
                continue  # shown as unreadable when asked

    def close(self) -> None:
        with self._lock:
            for index in self._runs.values():
                index.close()
            self._runs.clear()
