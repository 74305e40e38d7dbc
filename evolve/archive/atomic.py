"""The archive's JSON files: atomic whole-file JSON writes, and TinyDB storages built on them.

Every file is written through `evolve.durable` (temp file, fsync, rename, fsync of the
directory), so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from evolve.durable import atomic_write_bytes
from evolve.errors import UserError


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, _dumps(data).encode())


def corrupt(path: Path, why: str) -> UserError:
    return UserError(
        f"the archive file {path} cannot be read",
        why,
        "nothing was changed or deleted; restore the file from a backup, or move it aside "
        "and resume the run to rebuild what can be rebuilt",
    )


def read_json(path: Path) -> Any:
    """Parse a JSON file; missing file -> FileNotFoundError, anything else bad -> UserError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise corrupt(path, f"it could not be read ({e.strerror or e})") from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise corrupt(path, f"it is not valid JSON ({e})") from None


class AtomicJSONStorage(Storage):
    """TinyDB storage: atomic whole-file writes; read-only mode for browsing processes.

    With `cache=True` (the single writer only: it holds the run lock, so nobody else
    changes the file) the parsed data stays in memory and an insert costs one
    serialise+write instead of parse+serialise+write.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, cache: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.cache = cache and not read_only
        self._data: dict[str, dict[str, Any]] | None = None

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._data is not None:
            return self._data
        try:
            data = read_json(self.path)
        except FileNotFoundError:
            return None
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise corrupt(self.path, "it is JSON but not a TinyDB database (tables of documents)")
        if self.cache:
            self._data = data
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self.read_only:
            raise PermissionError(f"{self.path} is opened read-only")
        try:
            atomic_write_json(self.path, data)
        except BaseException:
            self._data = None  # TinyDB mutated the cached dict before writing; drop it
            raise
        if self.cache:
            self._data = data


class ShardStorage(AtomicJSONStorage):
    """Writer storage for append-only tables: each document is serialised once, then reused.

    Evaluation records are never modified after insertion (ShardSet only inserts), so
    the JSON text of a document can be memoised by (table, doc_id, the document object).
    An insert then costs one new `json.dumps` plus joining strings, not re-encoding
    the whole shard. A document changed in place would keep its old text: don't.
    """

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._texts: dict[tuple[str, str], tuple[Any, str]] = {}

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self.read_only:
            raise PermissionError(f"{self.path} is opened read-only")
        old, texts = self._texts, {}
        parts = []
        for table, docs in data.items():
            items = []
            for doc_id, doc in docs.items():
                memo = old.get((table, doc_id))
                if memo is None or memo[0] is not doc:
                    memo = (doc, f"{_dumps(doc_id)}:{_dumps(doc)}")
                texts[(table, doc_id)] = memo
                items.append(memo[1])
            parts.append(f"{_dumps(table)}:{{{','.join(items)}}}")
        try:
            atomic_write_bytes(self.path, f"{{{','.join(parts)}}}".encode())
        except BaseException:
            self._data = None
            self._texts = {}
            raise
        self._texts = texts
        if self.cache:
            self._data = data


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
