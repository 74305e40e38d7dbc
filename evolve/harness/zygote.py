"""The zygote: a trusted process that imports torch once and forks every genome and evaluator.

Starting Python and importing torch, torch._dynamo and torch.export costs about
3.5 CPU-seconds per process, twice per evaluation. Where every core is a slot,
that start-up CPU is what keeps N slots from giving N times the evaluations.
The zygote pays it once per slot; each evaluation then starts in milliseconds.

It never runs genome code itself, never touches CUDA (a forked CUDA context is
unusable) and has exactly one thread when it forks. A forked process becomes a
fresh session with only the file descriptors the runner handed over (stdin,
stdout+stderr, and one pipe as fd 3), the environment of its request, and
PDEATHSIG tied to the zygote; then it runs `evolve.harness.child` or
`evolve.harness.evaluate` exactly as a new interpreter would, prologue included.

Protocol, over a SOCK_SEQPACKET socket (fd given as argv[1]), one JSON object a packet:
  runner -> zygote  {"op": "spawn", "id", "entry", "argv", "cwd", "env"} + 3 fds
                    {"op": "kill", "pid"}      SIGKILL that child's process group
  zygote -> runner  {"op": "ready", "pid"}  |  {"op": "started", "id", "pid"}
                    {"op": "exited", "pid", "status", "maxrss"}
The zygote reaps its children itself, killing each one's group before reaping
it so the group id cannot be reused meanwhile. When the runner goes away (EOF),
it kills every child and exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import tempfile
import traceback

from evolve.harness import limits

MAX_PACKET = 1 << 20
ENTRIES = ("child", "evaluate")


def _preload() -> None:
    """What the genome prologue and the evaluator would otherwise import, per process."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch._export.serde.serialize  # noqa: F401
    import torch.export  # noqa: F401

    import evolve.harness.child  # noqa: F401
    import evolve.harness.evaluate  # noqa: F401


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _become(request: dict, fds: list[int], parent: int) -> None:
    """In the forked process: take the request's stdio, environment and entry point; never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        stdin, out, extra = fds
        os.dup2(stdin, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(extra, 3)
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # the zygote's socket above all
        limits.die_with_parent(parent)  # taken before fork: the zygote may die meanwhile
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # computed again from this process's TMPDIR
        sys.argv = list(request["argv"])
        if request["entry"] == "child":
            from evolve.harness.child import main
        else:
            from evolve.harness.evaluate import main
        code = _exit_code(main)
    except BaseException:  # noqa: B036 - anything the entry point let through, logged
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - a closed or broken log must not block the exit
                pass
        os._exit(code)


def _exit_code(main) -> int:
    """Run `main` as `python -m` would: SystemExit gives the status (1 for a message, which
    the child has already logged)."""
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code is None or isinstance(exc.code, int) else 1
    return 0


class Zygote:
    """The server loop: fork on request, reap, report; single-threaded by design."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write)

    def send(self, message: dict) -> None:
        self.sock.send(json.dumps(message).encode())

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self.wake_read], [], [])
            if self.wake_read in ready:
                os.read(self.wake_read, 4096)  # wake-up bytes; reap() finds every exited child
                self.reap()
            if self.sock in ready:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_PACKET, 3)
                if not data:
                    break  # the runner is gone
                self.handle(json.loads(data), fds)
        for pid in self.children:
            limits.kill_group(pid)

    def handle(self, request: dict, fds: list[int]) -> None:
        if request.get("op") == "kill":
            if request.get("pid") in self.children:  # never a reused pid: ours are unreaped
                limits.kill_group(request["pid"])
            return
        try:
            if request.get("entry") not in ENTRIES or len(fds) != 3:
                raise ValueError(
                    f"bad spawn request: entry {request.get('entry')!r}, {len(fds)} fds"
                )
            if _threads() != 1:
                raise RuntimeError(f"the zygote has {_threads()} threads; forking it is unsafe")
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                _become(request, fds, parent)
            self.children.add(pid)
            self.send({"op": "started", "id": request.get("id"), "pid": pid})
        except Exception as exc:
            self.send(
                {"op": "started", "id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}
            )
        finally:
            for fd in fds:
                os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            limits.kill_group(
                info.si_pid
            )  # what it left in its group, while the group id is still its
            _, status, usage = os.wait4(info.si_pid, 0)
            self.children.discard(info.si_pid)
            self.send(
                {
                    "op": "exited",
                    "pid": info.si_pid,
                    "status": status,
                    "maxrss": usage.ru_maxrss * 1024,
                }
            )


def _unsafe_to_fork() -> str | None:
    import torch

    if torch.cuda.is_initialized():
        return "CUDA was initialised during the imports; forked children could not use the GPU"
    if _threads() != 1:
        return f"{_threads()} threads after the imports; only the forking one would survive a fork"
    return None


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    _preload()
    zygote = Zygote(sock)
    problem = _unsafe_to_fork()
    zygote.send({"op": "ready", "pid": os.getpid(), **({"error": problem} if problem else {})})
    if problem is None:
        zygote.serve()


if __name__ == "__main__":
    main()
