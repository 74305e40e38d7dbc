"""One run on disk: config, evaluations, elites, generations, genomes and logs.

    <run>/config.json         the caller's config + fingerprints; written last at creation
    <run>/archive.json        format, shard size, grid, elite rule
    <run>/ids.json            next evaluation number (ids are reserved before a run starts)
    <run>/evals/shard-*.json  evaluation records, TinyDB, sharded (see shards.py)
    <run>/elites.json         TinyDB snapshot of the elites, for browsing
    <run>/generations.json    TinyDB, one document per generation (a DEAP Logbook)
    <run>/genomes/<sha256>.py and texts/<sha256>.txt   content-addressed sources, prompts
    <run>/logs/<eval-id>.log  one log per evaluation
    <run>/lock                flock of the single writer, holding its pid

The evaluation records are the truth. The writer rebuilds the elites from them on
open, so a kill -9 between writing a record and writing the snapshot loses nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from deap import tools

from evolve.archive.atomic import atomic_write_json, corrupt, read_json
from evolve.archive.blobs import Blobs
from evolve.archive.elites import Decision, Elite, EliteRule, ElitesMap, summarize
from evolve.archive.grid import Grid
from evolve.archive.layout import (
    FORMAT,
    SHARD_SIZE,
    check_run_dir,
    load_meta,
    make_dirs,
    remove_stale_temp_files,
)
from evolve.archive.lock import WriterLock
from evolve.archive.shards import Record, ShardSet, format_id, parse_id
from evolve.archive.tables import EliteSnapshot, Generations
from evolve.errors import UserError
from evolve.record import EvalResult, Evaluation

ID_BLOCK = 64  # ids reserved per write of ids.json


class RunArchive:
    """A run directory opened for reading (any number of processes) or writing (one)."""

    def __init__(self, path: Path, *, writer: bool, lock: WriterLock | None) -> None:
        self.path = path
        self.writer = writer
        self._lock = lock
        self.config: dict[str, Any] = check_run_dir(path)
        meta = load_meta(path)
        self.grid = Grid.from_list(meta["grid"])
        self.rule = EliteRule.from_dict(meta.get("rule", {}))
        self._meta = meta
        self.shards = ShardSet(path / "evals", int(meta["shard_size"]), writer=writer)
        self.genomes = Blobs(path / "genomes", ".py", "genome", writable=writer)
        self.texts = Blobs(path / "texts", ".txt", "text", writable=writer)
        self._snapshot = EliteSnapshot(path / "elites.json", self.grid.shape, writer=writer)
        self._generations = Generations(path / "generations.json", writer=writer)
        self.elite_map = ElitesMap(self.grid.total_cells, self.rule)
        self._next = self._reserved = 1
        self._seq = 0
        if writer:
            remove_stale_temp_files(path)
            self._rebuild()

    # --- opening -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: dict[str, Any],
        *,
        grid: Grid,
        rule: EliteRule | None = None,
    ) -> RunArchive:
        """Start a new run at `path` (a directory `<archive_dir>/<run-name>`) and open it for writing."""
        path = Path(path)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", path.name):
            raise UserError(
                f"bad run name {path.name!r}",
                "run names become directory names",
                "use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run directory {path}", str(e)) from None
        lock = WriterLock(path / "lock")
        lock.acquire()
        try:
            if (path / "config.json").exists():
                raise UserError(
                    f"the run {path} already exists", fix="resume it, or pick another run name"
                )
            meta = {
                "format": FORMAT,
                "shard_size": SHARD_SIZE,
                "created": time.time(),
                "grid": grid.to_list(),
                "rule": (rule or EliteRule()).to_dict(),
            }
            make_dirs(path)
            atomic_write_json(path / "archive.json", meta)
            atomic_write_json(path / "ids.json", {"next": 1})
            atomic_write_json(path / "elites.json", {"elites": {}})
            atomic_write_json(path / "generations.json", {"generations": {}})
            atomic_write_json(path / "config.json", config)  # last: marks the run complete
            return cls(path, writer=True, lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | Path, *, writer: bool = False) -> RunArchive:
        """Open an existing run. writer=True takes the run lock (UserError if someone holds it)."""
        path = Path(path)
        check_run_dir(path)
        if not writer:
            return cls(path, writer=False, lock=None)
        lock = WriterLock(path / "lock")
        lock.acquire()
        try:
            return cls(path, writer=True, lock=lock)
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        self.shards.close()
        self._snapshot.db.close()
        self._generations.db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> RunArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.path.name

    def _require_writer(self) -> None:
        if not self.writer:
            raise RuntimeError(f"{self.path} is opened read-only; open it with writer=True")

    def _rebuild(self) -> None:
        """Writer start-up: next id, insertion counter and elites from the records on disk."""
        slim: list[tuple[int, int, Record]] = []  # dicts: a small fraction of each record in memory
        for r in self.shards:  # streams shard by shard, and primes the shard index
            keep = {k: r.get(k) for k in ("id", "genome", "status", "cell", "descriptors")}
            result = r.get("result") or {}  # what _observe reads, and nothing more
            keep["result"] = {
                "val_bpb": result.get("val_bpb"),
                "hardware": result.get("hardware"),
                "split": result.get("split", "val"),
            }
            slim.append((int(r.get("seq") or 0), parse_id(r.get("id", "")) or 0, keep))
        self._seq = max((s for s, _, _ in slim), default=0)
        top = max((n for _, n, _ in slim), default=0)
        try:
            reserved = int(read_json(self.path / "ids.json")["next"])
        except FileNotFoundError:
            reserved = 1
        except (KeyError, TypeError, ValueError):
            raise corrupt(self.path / "ids.json", "it has no integer 'next'") from None
        self._next = self._reserved = max(reserved, top + 1)
        slim.sort(key=lambda item: item[:2])  # insertion order, as the elites first saw them
        for _, _, record in slim:
            self._observe(Evaluation.from_dict(record))
        self._write_elites()

    # --- content-addressed files ------------------------------------------------

    def put_genome(self, source: str) -> str:
        """Store a genome source once; returns its sha256 hex."""
        return self.genomes.put(source)

    def genome_source(self, sha: str) -> str:
        return self.genomes.get(sha)

    def put_text(self, text: str) -> str:
        """Store big text (LLM prompts/responses) once; returns its sha256 hex."""
        return self.texts.put(text)

    def text(self, sha: str) -> str:
        return self.texts.get(sha)

    def log_path(self, eval_id: str) -> Path:
        if parse_id(eval_id) is None:
            raise ValueError(f"not an evaluation id: {eval_id!r}")
        return self.path / "logs" / f"{eval_id}.log"

    # --- evaluations --------------------------------------------------------------

    def new_eval_id(self) -> str:
        """Reserve the next id. Ids are persisted in blocks, so ids handed out before a crash
        (evaluations lost in flight, whose logs may exist) are never handed out again."""
        self._require_writer()
        number = self._next
        if number >= self._reserved:
            self._reserved = number + ID_BLOCK
            atomic_write_json(self.path / "ids.json", {"next": self._reserved})
        self._next = number + 1
        return format_id(number)

    def add_evaluation(
        self,
        result: EvalResult,
        source: str,
        *,
        generation: int,
        parents: Sequence[str] = (),
        operator: str = "",
        idea: str = "",
        eval_id: str | None = None,
        prompt: str | None = None,
        response: str | None = None,
        origin: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> Evaluation:
        """Record one finished evaluation and update the elites; idempotent by eval_id.

        Returns the stored record; its decision says what it did to the elites
        (None for failed evaluations). An id already stored is returned unchanged.
        `target` (an aimed LLM mutation's niche, {"cell": [...], ...}) is stored with
        "landed": whether the child's cell is that cell.
        """
        self._require_writer()
        eval_id = eval_id or self.new_eval_id()
        number = parse_id(eval_id)
        if number is None:
            raise ValueError(f"not an evaluation id: {eval_id!r}")
        stored = self.get(eval_id)
        if stored is not None:
            return stored
        descriptors = self.grid.describe(result, source)
        cell = self.grid.cell_if_known(descriptors)
        record = Evaluation(
            id=eval_id,
            generation=generation,
            genome=self.put_genome(source),
            parents=list(parents),
            operator=operator,
            idea=" ".join(idea.split())[:300],
            result=EvalResult.from_dict(result.to_dict()),  # a copy: the caller's may change
            descriptors=descriptors,
            cell=None if cell is None else list(cell),
            created=time.time(),
        )
        if prompt is not None:
            record.prompt_sha256 = self.put_text(prompt)
        if response is not None:
            record.response_sha256 = self.put_text(response)
        if origin is not None:  # imported genome: the run and evaluation it came from
            record.origin = dict(origin)
        if target is not None:  # aimed mutation: the niche it was sent to, and whether it got there
            record.target = {
                **target,
                "landed": cell is not None and list(cell) == list(target.get("cell") or []),
            }
        self.insert_many([record])
        return record

    def insert_many(self, records: Iterable[Evaluation]) -> int:
        """Store complete records in bulk; skips known ids.

        Used by add_evaluation and for imports. Sets each record's seq and decision.
        Returns how many were new.
        """
        self._require_writer()
        batch: list[tuple[int, Record]] = []
        seen: set[int] = set()
        for record in records:
            number = parse_id(record.id)
            if number is None:
                raise ValueError(f"record without a valid evaluation id: {record.id!r}")
            if number in seen or self.shards.contains(number):
                continue
            seen.add(number)
            self._seq += 1
            record.seq = self._seq
            decision = self._observe(record)
            record.decision = None if decision is None else decision.value
            batch.append((number, record.to_dict()))
        if not batch:
            return 0
        self._next = max(self._next, max(n for n, _ in batch) + 1)
        try:
            self.shards.insert(batch)
        except BaseException:  # keep the elites in step with what reached the disk
            self.elite_map.forget(r["id"] for n, r in batch if not self.shards.contains(n))
            raise
        self._write_elites()
        return len(batch)

    def _observe(self, record: Evaluation) -> Decision | None:
        return observe(self.elite_map, record)

    def get(self, eval_id: str) -> Evaluation | None:
        number = parse_id(eval_id)
        record = None if number is None else self.shards.get(number)
        return None if record is None else Evaluation.from_dict(record)

    def evaluations(self) -> Iterator[Evaluation]:
        """Every evaluation in id order, read fresh from disk."""
        return map(Evaluation.from_dict, self.shards)

    def evaluations_of(self, genome: str) -> list[Evaluation]:
        out: list[Evaluation] = []
        for shard, members in sorted(self.shards.index().items()):
            numbers = [n for n, g in members.items() if g == genome]
            if numbers:
                records = self.shards.read_shard(shard)
                out.extend(
                    Evaluation.from_dict(records[n]) for n in sorted(numbers) if n in records
                )
        return out

    def count(self) -> int:
        return sum(len(m) for m in self.shards.index().values())

    # --- elites ---------------------------------------------------------------------

    def elites(self) -> list[Elite]:
        """Current elites sorted by cell (writer: live; reader: the last snapshot on disk)."""
        if self.writer:
            return self.elite_map.elites()
        return self._snapshot.read()

    def summary(self) -> dict[str, Any]:
        """coverage, qd_score, best and mean of the current elites."""
        return summarize(self.elites(), self.grid.total_cells, self.rule)

    def set_noise_std(self, noise_std: float) -> None:
        """Adopt the measured seed noise; the elites are recomputed under the new margin."""
        self._require_writer()
        self.rule = EliteRule.from_dict({**self.rule.to_dict(), "noise_std": float(noise_std)})
        self._meta["rule"] = self.rule.to_dict()
        atomic_write_json(self.path / "archive.json", self._meta)
        self.elite_map.set_rule(self.rule)
        self._write_elites()

    def _write_elites(self) -> None:
        self._snapshot.write(self.elite_map.elites())

    # --- generations --------------------------------------------------------------

    def record_generation(self, gen: int, evals: int, **extra: Any) -> dict[str, Any]:
        """Store one generation's stats (coverage/qd_score/best/mean taken from the elites now)."""
        self._require_writer()
        row = {"gen": gen, "evals": evals, **self.summary(), **extra}
        self._generations.record(row)
        return row

    def logbook(self) -> tools.Logbook:
        """The generations so far as a DEAP Logbook (gen, evals, coverage, qd_score, best, mean)."""
        return self._generations.logbook()


def observe(elite_map: ElitesMap, record: Evaluation) -> Decision | None:
    """Take a stored record into `elite_map` as the writer does (None: it scored nothing)."""
    bpb, cell = record.val_bpb, record.cell
    if cell is None or bpb is None:
        return None
    if record.sealed:  # the test split never selects: not in the map, not in the noise
        return Decision.SEALED
    if not record.comparable:
        return Decision.OFF_CLASS
    return elite_map.add(record.genome, cell, bpb, record.id, record.descriptors)
