"""Evaluation records sharded over many small TinyDB files.

TinyDB rewrites its whole file on every insert. One file for a 100,000-evaluation
run would make each insert rewrite ~100 MB. Instead evaluation number n lives in
`evals/shard-{n // shard_size:06d}.json` under TinyDB doc_id n, so an insert
rewrites at most one shard of `shard_size` records whatever the run's size, and
`get(id)` reads one shard.
"""

from __future__ import annotations

import copy
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from evolve.archive.atomic import AtomicJSONStorage, ShardStorage, corrupt, read_json

TABLE = "evaluations"
SHARD_RE = re.compile(r"^shard-(\d{6,})\.json$")
ID_RE = re.compile(r"^e(\d{6,})$")
OPEN_SHARDS = 4  # TinyDB handles kept open; the writer only ever touches the newest few


def format_id(number: int) -> str:
    return f"e{number:06d}"


def parse_id(eval_id: str) -> int | None:
    """The number inside an evaluation id, or None when it is not one of ours."""
    m = ID_RE.match(eval_id) if isinstance(eval_id, str) else None
    return int(m.group(1)) if m else None


Record = dict[str, Any]
StatKey = tuple[int, int, int]


class ShardSet:
    """All shards of one run. The writer caches parsed shards; readers revalidate by stat."""

    def __init__(self, directory: Path, shard_size: int, *, writer: bool) -> None:
        self.directory = directory
        self.shard_size = shard_size
        self.writer = writer
        self._dbs: OrderedDict[int, TinyDB] = OrderedDict()
        # shard -> (stat key, {number: genome hash}): enough for count() and genome lookups.
        self._index: dict[int, tuple[StatKey, dict[int, str]]] = {}

    def path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:06d}.json"

    def shards(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := SHARD_RE.match(n)))

    def _table(self, shard: int) -> Table:
        db = self._dbs.pop(shard, None)
        if db is None:
            storage = ShardStorage if self.writer else AtomicJSONStorage
            db = TinyDB(
                self.path(shard), storage=storage, read_only=not self.writer, cache=self.writer
            )
            while len(self._dbs) >= OPEN_SHARDS:
                self._dbs.popitem(last=False)[1].close()
        self._dbs[shard] = db
        return db.table(TABLE)

    def get(self, number: int) -> Record | None:
        doc = self._table(number // self.shard_size).get(doc_id=number)
        return None if doc is None else copy.deepcopy(dict(doc))

    def contains(self, number: int) -> bool:
        return self._table(number // self.shard_size).contains(doc_id=number)

    def insert(self, records: Iterable[tuple[int, Record]]) -> list[int]:
        """Insert records absent so far, one write per touched shard; returns the numbers written."""
        by_shard: dict[int, list[tuple[int, Record]]] = {}
        for number, record in records:
            by_shard.setdefault(number // self.shard_size, []).append((number, record))
        written: list[int] = []
        for shard, items in sorted(by_shard.items()):
            table = self._table(shard)
            fresh = {n: r for n, r in items if not table.contains(doc_id=n)}
            if not fresh:
                continue
            table.insert_multiple(Document(r, doc_id=n) for n, r in fresh.items())
            written.extend(fresh)
            entry = self._index.get(shard)
            if entry is not None:  # keep the index current without re-reading our own write
                entry[1].update((n, r.get("genome", "")) for n, r in fresh.items())
                self._index[shard] = (_stat_key(self.path(shard)), entry[1])
        return written

    def read_shard(self, shard: int) -> dict[int, Record]:
        """A fresh parse of one shard (caller may keep/mutate it), keyed by number."""
        path = self.path(shard)
        try:
            data = read_json(path)
        except FileNotFoundError:
            return {}
        table = data.get(TABLE, {}) if isinstance(data, dict) else None
        if not isinstance(table, dict) or not all(isinstance(r, dict) for r in table.values()):
            raise corrupt(path, f"it has no {TABLE!r} table of records")
        try:
            return {int(k): v for k, v in sorted(table.items(), key=lambda kv: int(kv[0]))}
        except ValueError:
            raise corrupt(path, "a document id is not a number") from None

    def __iter__(self) -> Iterator[Record]:
        """Every record in id order, parsed fresh; refreshes the index on the way."""
        for shard in self.shards():
            key = _stat_key(self.path(shard))
            records = self.read_shard(shard)
            self._index[shard] = (key, {n: r.get("genome", "") for n, r in records.items()})
            yield from records.values()

    def index(self) -> dict[int, dict[int, str]]:
        """shard -> {number: genome}, re-reading only shards that changed on disk since last time."""
        current = self.shards()
        for stale in set(self._index) - set(current):
            del self._index[stale]
        for shard in current:
            key = _stat_key(self.path(shard))
            cached = self._index.get(shard)
            if cached is None or cached[0] != key:
                records = self.read_shard(shard)
                self._index[shard] = (key, {n: r.get("genome", "") for n, r in records.items()})
        return {s: entry[1] for s, entry in self._index.items()}

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)
