"""Host-side sandbox parts: clean environment, process fence, memory watch, harness hashes.

The child confines itself (see `evolve.harness.child`); these are the parts the
runner holds from outside, where the genome cannot reach them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from pathlib import Path

from evolve.harness.limits import kill_group

__all__ = ["kill_group"]  # shared with the zygote, which kills its children's groups

# Variables a training process may legitimately need; everything else (API keys,
# cloud credentials, tokens) is dropped.
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "LD_LIBRARY_PATH", "CUDA_HOME",
            "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE")


def clean_env(workdir: Path, threads: int, cuda_visible: str | None, extra: dict[str, str]) -> dict:
    """A whitelisted environment: nothing secret survives, caches point into the sandbox."""
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    cache = workdir / ".cache"
    env.update(HOME=str(workdir), TMPDIR=str(workdir / "tmp"), XDG_CACHE_HOME=str(cache),
               TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"), TRITON_CACHE_DIR=str(cache / "triton"),
               MPLCONFIGDIR=str(cache / "mpl"), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES=cuda_visible or "")
    env.update(extra)
    return env


class Fence:
    """A cgroup (pids controller) around one evaluation, where the host lets us make one.

    It caps the number of processes (a fork bomb stops at the cap even for root,
    whom RLIMIT_NPROC does not bind) and lists every process of the evaluation,
    including those that left the process group with setsid().
    """

    ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def create(cls, max_procs: int) -> Fence:
        for root in cls.ROOTS:
            base = Path(root)
            if not (base / "cgroup.procs").exists():
                continue
            path = base / "evolve" / uuid.uuid4().hex[:12]
            try:
                path.parent.mkdir(exist_ok=True)
                _sweep(path.parent)
                _try_write(path.parent / "cgroup.subtree_control", "+pids")  # cgroup v2
                path.mkdir()
                (path / "pids.max").write_text(str(max_procs))
                return cls(path)
            except OSError:
                _rmdir(path)
        return cls(None)

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """Stop all forking, SIGKILL everything inside until it is empty, remove the cgroup."""
        if self.path is None:
            return
        _try_write(self.path / "pids.max", "0")
        _try_write(self.path / "cgroup.kill", "1")  # cgroup v2, Linux 5.14+
        for _ in range(500):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.01)
        _rmdir(self.path)


def _sweep(parent: Path, age: float = 3600.0) -> None:
    """Remove fences left by runners that were killed (rmdir fails on any cgroup in use)."""
    for child in parent.iterdir():
        try:
            if child.is_dir() and time.time() - child.stat().st_mtime > age:
                child.rmdir()
        except OSError:
            pass


def _try_write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def group_members(pgid: int) -> list[int]:
    """Processes whose process group is `pgid` (field 5 of /proc/PID/stat)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


_PAGE = os.sysconf("SC_PAGE_SIZE")


def memory_bytes(pids: list[int]) -> int:
    """Proportional set size of the processes: pages shared after fork() are counted once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, IndexError, ValueError):
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                pass
    return total


HARNESS_DIR = Path(__file__).resolve().parent.parent / "harness"


def harness_hashes() -> dict[str, str]:
    """sha256 of every file of the trusted harness, to prove no genome changed one."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(HARNESS_DIR.glob("*.py"))}
