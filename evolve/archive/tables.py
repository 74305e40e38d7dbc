"""The two small TinyDB files beside the shards: the elites snapshot and the generations.

Both are rewritten whole on each change (they stay small: one document per cell,
one per generation) through the atomic storage, so readers never see half a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deap import tools
from tinydb import TinyDB
from tinydb.table import Document

from evolve.archive.atomic import AtomicJSONStorage, corrupt
from evolve.archive.elites import Elite

LOGBOOK_HEADER = ["gen", "evals", "coverage", "qd_score", "best", "mean"]


def open_db(path: Path, *, writer: bool) -> TinyDB:
    return TinyDB(path, storage=AtomicJSONStorage, read_only=not writer, cache=writer)


class EliteSnapshot:
    """elites.json: table "elites", one document per filled cell (doc_id = flat cell index + 1)."""

    def __init__(self, path: Path, shape: Sequence[int], *, writer: bool) -> None:
        self.path, self.shape = path, tuple(shape)
        self.db = open_db(path, writer=writer)
        self._last: dict[str, Any] | None = None

    def _doc_id(self, cell: Sequence[int]) -> int:
        flat = 0
        for index, size in zip(cell, self.shape, strict=True):
            flat = flat * size + index
        return flat + 1

    def write(self, elites: Sequence[Elite]) -> None:
        """Replace the whole table in one atomic write; skipped when nothing changed."""
        snapshot = {str(self._doc_id(e.cell)): e.to_dict() for e in elites}
        if snapshot != self._last:
            self.db.storage.write({"elites": snapshot})
            self.db.table("elites").clear_cache()
            self._last = snapshot

    def read(self) -> list[Elite]:
        docs = self.db.table("elites").all()
        try:
            return sorted((Elite.from_dict(d) for d in docs), key=lambda e: e.cell)
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt(self.path, f"an elite is malformed ({e!r})") from None


class Generations:
    """generations.json: one document per generation (doc_id = gen + 1), shown as a DEAP Logbook."""

    def __init__(self, path: Path, *, writer: bool) -> None:
        self.db = open_db(path, writer=writer)

    def record(self, row: dict[str, Any]) -> None:
        """Idempotent by generation: recording a generation again overwrites its fields."""
        self.db.table("generations").upsert(Document(row, doc_id=int(row["gen"]) + 1))

    def logbook(self) -> tools.Logbook:
        book = tools.Logbook()
        book.header = list(LOGBOOK_HEADER)
        for doc in sorted(self.db.table("generations").all(), key=lambda d: d.doc_id):
            book.record(**doc)
        return book
