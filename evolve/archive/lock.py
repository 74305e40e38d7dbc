"""The one-writer-per-run lock.

`fcntl.flock` on `<run>/lock`, exclusive and non-blocking, held as long as the
writer lives. The kernel drops it when the process dies, kill -9 included, so a
crashed run never leaves a stale lock behind. flock locks belong to an open file
description: a second open of the same file in the same process conflicts too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from evolve.errors import UserError


class WriterLock:
    """An exclusive hold on `path`; the holder's pid is written into the file for others."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot open the lock file {self.path}",
                e.strerror or str(e),
                "check that the run directory exists and is writable by you",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise UserError(
                f"the run {self.path.parent} is locked by {who}",
                "only one process may write to a run at a time",
                f"wait for {who} to finish or stop it (kill {holder or '<pid>'}); "
                "browsing the run read-only needs no lock",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, OSError):
        return None
