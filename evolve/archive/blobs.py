"""Content-addressed text files: genome sources and LLM prompts/responses, stored once.

Records hold only the sha256, so a shard stays small however long the texts are,
and a genome evaluated a hundred times is stored once.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from evolve.durable import atomic_write_bytes
from evolve.errors import UserError

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
CACHE_SIZE = 512  # texts kept in memory: the proposer reads every elite's source per child


class Blobs:
    """`<folder>/<sha256><suffix>` files, written atomically, never rewritten."""

    def __init__(self, folder: Path, suffix: str, what: str, *, writable: bool) -> None:
        self.folder, self.suffix, self.what, self.writable = folder, suffix, what, writable
        self._cache: dict[str, str] = {}  # a text never changes under its hash: read it once
        self._cache_lock = threading.Lock()  # proposal threads read sources at the same time

    def path(self, sha: str) -> Path:
        if not SHA_RE.match(sha or ""):
            raise UserError(f"{sha!r} is not a {self.what} hash", fix="give the full 64-hex sha256")
        return self.folder / f"{sha}{self.suffix}"

    def put(self, text: str) -> str:
        data = text.encode()
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if not target.exists():
            if not self.writable:
                raise RuntimeError(f"{self.folder} is opened read-only")
            atomic_write_bytes(target, data)
        return sha

    def get(self, sha: str) -> str:
        text = self._cache.get(sha)
        if text is None:
            try:
                text = self.path(sha).read_text()
            except FileNotFoundError:
                raise UserError(f"{self.what} {sha[:12]} is not in {self.folder}") from None
            with self._cache_lock:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)), None)  # the oldest
                self._cache[sha] = text
        return text
