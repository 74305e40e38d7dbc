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
ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)


def clean_env(workdir: Path, threads: int, cuda_visible: str | None, extra: dict[str, str]) -> dict:
    """A whitelisted environment: nothing secret survives, caches point into the sandbox."""
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    cache = workdir / ".cache"
    env.update(
        HOME=str(workdir),
        TMPDIR=str(workdir / "tmp"),
        XDG_CACHE_HOME=str(cache),
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
        TRITON_CACHE_DIR=str(cache / "triton"),
        MPLCONFIGDIR=str(cache / "mpl"),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        CUDA_VISIBLE_DEVICES=cuda_visible or "",
    )
    env.update(extra)
    return env


class Fence:
    """Cgroups around one evaluation, where the host lets us make them.

    The pids controller caps the number of processes (a fork bomb stops at the cap
    even for root, whom RLIMIT_NPROC does not bind) and lists every process of the
    evaluation, including those that left the process group with setsid(). The
    memory controller caps what the kernel charges to the evaluation: anonymous
    memory, and also tmpfs, /dev/shm and memfd pages, which no rlimit and no
    per-process figure (RSS, PSS) counts when they are not mapped.

    cgroup v2 (one hierarchy, both controllers in one folder) where the memory
    controller is enabled; else cgroup v1: pids at the root of its hierarchy, memory
    below the runner's own memory cgroup, so the host's limits on the runner still
    hold for the genome.
    """

    V2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
    PIDS_V1 = "/sys/fs/cgroup/pids"
    MEMORY_V1 = "/sys/fs/cgroup/memory"

    def __init__(self, pids_dir: Path | None, memory_dir: Path | None = None) -> None:
        self.path = pids_dir  # where the processes are listed
        self.memory = memory_dir  # holds memory.max (v2) or memory.limit_in_bytes (v1)

    @property
    def dirs(self) -> list[Path]:
        """Every cgroup the genome joins (one per hierarchy)."""
        return list(dict.fromkeys(p for p in (self.path, self.memory) if p is not None))

    @property
    def layers(self) -> list[str]:
        return (["cgroup-pids"] if self.path else []) + (["cgroup-memory"] if self.memory else [])

    @classmethod
    def create(cls, max_procs: int, mem_bytes: int | None = None) -> Fence:
        name = uuid.uuid4().hex[:12]
        for root in cls.V2_ROOTS:  # a v2 hierarchy with the controllers we need
            both = _make(Path(root), name, {"pids": str(max_procs)}, mem_bytes, v2=True)
            if both is not None:
                return cls(both, both if (both / "memory.max").exists() and mem_bytes else None)
        pids = _make(Path(cls.PIDS_V1), name, {"pids": str(max_procs)}, None, v2=False)
        memory = None
        if mem_bytes:
            memory = _make(_own_v1_memory(Path(cls.MEMORY_V1)), name, {}, mem_bytes, v2=False)
        return cls(pids, memory)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs:
            try:
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for passing the memory limit."""
        if self.memory is None:
            return 0
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            try:
                for line in (self.memory / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError):
                continue
        return 0

    def kill_all(self) -> None:
        """Stop all forking, SIGKILL everything inside until it is empty, remove the cgroups."""
        if not self.dirs:
            return
        if self.path is not None:
            _try_write(self.path / "pids.max", "0")
        for path in self.dirs:
            _try_write(path / "cgroup.kill", "1")  # cgroup v2, Linux 5.14+
        for _ in range(500):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.01)
        for path in self.dirs:
            _rmdir(path)


def _make(
    base: Path | None, name: str, pids: dict[str, str], mem_bytes: int | None, v2: bool
) -> Path | None:
    """`base`/evolve/`name` with its limits written; None where the host does not allow it."""
    if base is None or not (base / "cgroup.procs").exists():
        return None
    if v2:
        try:
            controllers = (base / "cgroup.controllers").read_text().split()
        except OSError:
            return None
        if "pids" not in controllers:
            return None
        if "memory" not in controllers:
            mem_bytes = None
    path = base / "evolve" / name
    try:
        path.parent.mkdir(exist_ok=True)
        _sweep(path.parent)
        if v2:
            _try_write(base / "cgroup.subtree_control", "+pids +memory")
            _try_write(path.parent / "cgroup.subtree_control", "+pids +memory")
        path.mkdir()
        if pids:
            (path / "pids.max").write_text(pids["pids"])
        if mem_bytes and v2:
            (path / "memory.max").write_text(str(mem_bytes))
            _try_write(path / "memory.swap.max", "0")
        elif mem_bytes:
            (path / "memory.limit_in_bytes").write_text(str(mem_bytes))
            _try_write(path / "memory.memsw.limit_in_bytes", str(mem_bytes))  # no swapping past it
        return path
    except OSError:
        _rmdir(path)
        return None


def _own_v1_memory(root: Path) -> Path | None:
    """The runner's own cgroup in the v1 memory hierarchy (/proc/self/cgroup)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return root / path.lstrip("/")
    except (OSError, ValueError):
        pass
    return None


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
    """What the processes hold in memory: PSS plus their memfd and /dev/shm files.

    PSS counts pages shared after fork() once; the files cover memory that is held
    without being mapped (a memfd filled with write()), which PSS never sees. A file
    both mapped and open is counted twice: an overestimate, on the safe side.
    """
    return _pss(pids) + shared_file_bytes(pids)


SHARED_FILES = ("/memfd:", "/dev/shm/", "/SYSV")


def shared_file_bytes(pids: list[int]) -> int:
    """Bytes held by memfd, /dev/shm and SysV segments the processes have open (each file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            link = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(link).startswith(SHARED_FILES):
                    continue
                info = os.stat(link)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def _pss(pids: list[int]) -> int:
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


def disk_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """(bytes allocated on disk, entries) below `root`, each inode once, symlinks not followed.

    Allocated blocks, not apparent sizes: a sparse file costs what it holds. Stops
    counting at `max_entries`, so a genome that makes millions of files cannot make
    the count itself expensive.
    """
    seen: set[int] = set()
    total = entries = 0
    stack = [str(root)]
    while stack and entries <= max_entries:
        folder = stack.pop()
        try:
            listing = os.scandir(folder)
        except PermissionError:  # a folder the genome made unreadable to hide what it holds
            try:
                os.chmod(folder, 0o700)  # same owner as the genome: allowed
                listing = os.scandir(folder)
            except OSError:
                return total, max_entries + 1  # what cannot be counted is over the cap
        except OSError:
            continue
        try:
            with listing:
                for entry in listing:
                    entries += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if info.st_ino not in seen:
                        seen.add(info.st_ino)
                        total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total, entries


HARNESS_DIR = Path(__file__).resolve().parent.parent / "harness"


def harness_hashes() -> dict[str, str]:
    """sha256 of every file of the trusted harness, to prove no genome changed one."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(HARNESS_DIR.glob("*.py"))
    }
