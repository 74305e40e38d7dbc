"""The runner's side of the zygotes (`evolve.harness.zygote`), started on first use.

A zygote starts with a slot's clean environment (threads, GPU); slots with the
same environment share one, which forks for each in turn. It is replaced when
the harness files change under it, so a child never runs stale harness code,
and closed after IDLE_TTL unused, so a long-lived process (a Ray worker that
served many GPUs) keeps only the zygotes it uses. A zygote exits when its
socket closes, whatever way this process ends, and its children die with it
(PDEATHSIG).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from evolve.harness.zygote import MAX_PACKET
from evolve.runner import sandbox

READY_TIMEOUT = 120.0  # interpreter start and torch imports, on a loaded machine
STOP_TIMEOUT = 10.0  # a killed child's exit report takes milliseconds from a working zygote
IDLE_TTL = 300.0  # seconds without a child before a zygote of another environment is closed


class ZygoteError(RuntimeError):
    """The zygote could not start a process (it died, or refused)."""


class Child:
    """A process the zygote forked for us: what `subprocess.Popen` offers that the runner uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.status: int | None = None  # raw wait status, once reaped
        self.max_rss: int | None = None
        self.lost = False  # the zygote died first: the exit status is unknown
        self._done = threading.Event()

    @property
    def returncode(self) -> int | None:
        if not self._done.is_set():
            return None
        return -9 if self.status is None else os.waitstatus_to_exitcode(self.status)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL its process group, through the zygote (which knows whether it is still ours)."""
        if not self._done.is_set():
            try:
                self.zygote.send({"op": "kill", "pid": self.pid})
            except ZygoteError:
                pass  # a dead zygote's children die with it

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Kill and wait; a zygote that does not report the exit in time (stopped, hung) is
        killed itself, which takes its children along."""
        self.kill()
        if self.wait(timeout) is None:
            self.zygote.abort()
            self.wait()
        return self.returncode

    def _finish(self, status: int | None, max_rss: int | None) -> None:
        self.status, self.max_rss, self.lost = status, max_rss, status is None
        self._done.set()


class Zygote:
    """One zygote process and the thread that reads what it reports."""

    def __init__(self, threads: int, cuda_visible: str | None, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self.home = Path(tempfile.mkdtemp(prefix="evolve-zygote-"))
        (self.home / "tmp").mkdir()
        # The slot's clean environment. Its own tweaks, which its children do not inherit:
        # numpy's BLAS pool would make it multi-threaded, and a CUDA check that ran the
        # CUDA runtime (rather than NVML) would leave forked children without a GPU.
        env = sandbox.clean_env(
            self.home,
            threads,
            cuda_visible,
            {"OPENBLAS_NUM_THREADS": "1", "PYTORCH_NVML_BASED_CUDA_CHECK": "1"},
        )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self._send_lock, self._lock = threading.Lock(), threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[threading.Event, list]] = {}
        self._children: dict[int, Child] = {}
        self._ready = threading.Event()
        self._refusal: str | None = None
        self.closed = False
        self.last_used = time.monotonic()
        self.log_path = self.home / "zygote.log"  # its own output: warnings, tracebacks
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-u", "-m", "evolve.harness.zygote", str(theirs.fileno())],
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read, name=f"zygote-{self.pid}", daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT) or self.closed or self._refusal:
            problem = self._refusal or (
                f"it did not start within {READY_TIMEOUT:g} s (exit code {self.process.poll()})"
            )
            tail = self.log_path.read_text(errors="replace")[-2000:].strip()
            self.close()
            raise ZygoteError(
                f"the harness zygote could not start: {problem}"
                + (f"; its output ends with:\n{tail}" if tail else "")
            )

    def send(self, message: dict, fds: list[int] | None = None) -> None:
        try:
            with self._send_lock:
                socket.send_fds(self.sock, [json.dumps(message).encode()], fds or [])
        except OSError as exc:
            raise ZygoteError(f"the harness zygote is gone ({exc})") from exc

    def idle_for(self) -> float:
        """Seconds since it last had a child (0 while it has one)."""
        with self._lock:
            return 0.0 if self._children else time.monotonic() - self.last_used

    def spawn(
        self,
        entry: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        stdin: int,
        out: int,
        extra: int,
    ) -> Child:
        """Fork `entry` ("child" or "evaluate") with these fds as 0, 1+2 and 3."""
        self.last_used = time.monotonic()
        request_id = next(self._ids)
        arrived, box = threading.Event(), []
        with self._lock:
            self._waiting[request_id] = (arrived, box)
        self.send(
            {
                "op": "spawn",
                "id": request_id,
                "entry": entry,
                "argv": argv,
                "cwd": str(cwd),
                "env": env,
            },
            [stdin, out, extra],
        )
        if not arrived.wait(30.0) or not box:
            with self._lock:
                self._waiting.pop(request_id, None)
            self.abort()  # a late fork would have nobody to stop it
            raise ZygoteError("the harness zygote did not answer a start request")
        if isinstance(box[0], str):
            raise ZygoteError(f"the harness zygote could not start {entry}: {box[0]}")
        return box[0]

    def abort(self) -> None:
        """SIGKILL the zygote (our child, so its pid is ours until we reap it)."""
        self.closed = True
        try:
            self.process.kill()
        except OSError:
            pass

    def alive(self) -> bool:
        return not self.closed and self.process.poll() is None

    def close(self) -> None:
        """Closing the socket is the zygote's signal to kill its children and exit."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            sandbox.kill_group(self.pid)
            self.process.wait()
        self.sock.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_PACKET)
            except OSError:
                data = b""
            if not data:
                break
            self._dispatch(json.loads(data))
        self.closed = True
        self._ready.set()
        with self._lock:
            for child in self._children.values():
                child._finish(None, None)
            for arrived, _ in self._waiting.values():
                arrived.set()

    def _dispatch(self, message: dict) -> None:
        op = message.get("op")
        if op == "ready":
            self._refusal = message.get("error")
            self._ready.set()
        elif op == "started":
            with self._lock:
                waiting = self._waiting.pop(message["id"], None)
                if waiting is None:
                    return  # its caller gave up and aborted this zygote
                arrived, box = waiting
                if "pid" in message:
                    child = self._children[message["pid"]] = Child(self, message["pid"])
                    box.append(child)
                else:
                    box.append(str(message.get("error")))
            arrived.set()
        elif op == "exited":
            with self._lock:
                child = self._children.pop(message["pid"], None)
                self.last_used = time.monotonic()
            if child is not None:
                child._finish(int(message["status"]), int(message["maxrss"]))


_zygotes: dict[tuple, Zygote] = {}
_locks: dict[tuple, threading.Lock] = {}
_registry_lock = threading.Lock()


def get(threads: int, cuda_visible: str | None, hashes: dict[str, str]) -> Zygote:
    """The running zygote for this environment, started (or replaced, if dead or stale) as needed."""
    key = (threads, cuda_visible)
    _close_idle(key)
    with _registry_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # environments start their zygotes in parallel; one never starts two
        zygote = _zygotes.get(key)
        if zygote is not None and (not zygote.alive() or zygote.hashes != hashes):
            zygote.close()
            zygote = None
        if zygote is None:
            zygote = _zygotes[key] = Zygote(threads, cuda_visible, hashes)
        zygote.last_used = time.monotonic()  # not closed as idle before its caller forks
        return zygote


def _close_idle(keep: tuple) -> None:
    with _registry_lock:
        others = [(key, zygote) for key, zygote in _zygotes.items() if key != keep]
    for key, zygote in others:
        if zygote.idle_for() > IDLE_TTL and _locks[key].acquire(blocking=False):
            try:
                if _zygotes.get(key) is zygote and zygote.idle_for() > IDLE_TTL:
                    del _zygotes[key]
                    zygote.close()
            finally:
                _locks[key].release()
