"""The genome's stdout and stderr: a pipe the runner copies to the log, up to a cap.

Handing the genome the log file itself would let it write gigabytes to the host's
disk. Instead it writes to a pipe; the runner keeps the first `cap` bytes, then
only the last `TAIL` bytes (where a crash's traceback is), and writes a visible
marker saying how much it dropped.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

TAIL = 64 << 10
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20  # fewer stalls for a genome that prints in bursts


class LogPipe:
    """The read end stays here; `write_fd` goes to the genome as its fds 1 and 2."""

    def __init__(self, path: Path, cap: int) -> None:
        self.read_fd, self.write_fd = os.pipe()
        try:
            fcntl.fcntl(self.read_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default size works too
        os.set_blocking(self.read_fd, False)
        self.cap, self.kept, self.dropped = cap, 0, 0
        self.tail = bytearray()
        # Unbuffered: what the genome printed is on disk at once, for `evolve log`, the
        # viewer and anyone following a running evaluation.
        self.log = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self.open = True  # until EOF

    def close_write(self) -> None:
        """Our copy of the write end, once the genome holds its own."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def pump(self, limit: int = 4 << 20) -> None:
        """Copy what the pipe holds now (at most `limit` bytes per call, so the runner's
        other duties are not starved by a genome that prints without pause)."""
        moved = 0
        while self.open and moved < limit:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.open = False
                return
            moved += len(chunk)
            room = max(0, self.cap - self.kept)
            if room:
                self.log.write(chunk[:room])
                self.kept += min(room, len(chunk))
            if len(chunk) > room:
                self.tail += chunk[room:]
                self.dropped += len(chunk) - room
                del self.tail[:-TAIL]

    def close(self) -> None:
        """Copy the rest (every writer is dead by now), mark the cut, close everything."""
        self.close_write()
        self.pump(limit=self.cap + 2 * TAIL)
        if self.dropped:
            hidden = self.dropped - len(self.tail)
            self.log.write(
                f"\n[evolve: the log passed its cap of {self.cap:,} bytes; "
                f"{hidden:,} bytes were dropped here; the last {len(self.tail):,} "
                f"follow]\n".encode()
            )
            self.log.write(bytes(self.tail))
        self.log.close()
        os.close(self.read_fd)
