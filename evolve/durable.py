"""Crash-safe whole-file writes: the one place that writes a file by temp file and rename.

A run is killed with SIGKILL (or loses power) at arbitrary moments while other processes
browse it, and a prepare of the data cache can die half-way. Every file is therefore
written to a temporary file in the same directory, flushed and fsynced, renamed over the
old one with `os.replace`, and the directory is fsynced, so a reader sees the old file or
the new one, never half, and the rename survives power loss. Only the standard library
here: the trusted harness (data cache) and the archive both use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_MARK = ".tmp-"  # temp files are ".<name>.tmp-<pid>-<hex>"; only the writer removes stale ones


def fsync_dir(directory: Path) -> None:
    """Make a rename durable across power loss (POSIX keeps names in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, mode: int = 0o666) -> None:
    """Replace `path` with what `write(file)` writes; no reader or crash sees a partial file.

    `write` streams into the file (a large array need not be built in memory first);
    `mode` is the new file's permissions before the umask. The directory must exist.
    """
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """`atomic_write` of bytes already in memory."""
    atomic_write(path, lambda f: f.write(data), mode=mode)
