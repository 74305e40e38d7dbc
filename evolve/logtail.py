"""The end of a log, read without reading the rest: a genome's log can grow to gigabytes."""

from __future__ import annotations

from pathlib import Path


def tail(path: Path, limit: int) -> tuple[str, int]:
    """The last `limit` bytes of `path` as text, and how many bytes came before them.

    An unreadable or missing file gives ("", 0).
    """
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace"), max(0, size - limit)
    except OSError:
        return "", 0
