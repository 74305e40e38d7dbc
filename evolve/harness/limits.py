"""Resource limits and privilege drop, applied by the child to itself before the genome runs.

Applying them in the child (rather than in a `preexec_fn`) keeps the runner safe
to call from threads. Once capabilities are dropped, even a genome running as
root cannot raise its hard limits back or leave its cgroup.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP = 1, 24
_CAP_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


def join_cgroup(cgroup_dir: str | None) -> bool:
    """Move this process into the cgroup the runner made (pid cap, clean kill)."""
    if not cgroup_dir:
        return False
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
        return True
    except OSError:
        return False


def kill_group(pgid: int) -> None:
    """SIGKILL a process group, if it is still there."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def die_with_parent(parent: int) -> bool:
    """Get SIGKILL when the runner dies, so a killed search leaves no training behind."""
    armed = _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)
    return armed


def set_rlimits(mem_bytes: int | None, max_procs: int | None, max_file_bytes: int) -> list[str]:
    """Hard-cap address space, processes and file size; return which caps were set."""
    applied = []
    caps = [(resource.RLIMIT_CORE, 0, "core"), (resource.RLIMIT_FSIZE, max_file_bytes, "fsize")]
    if mem_bytes:
        caps.append((resource.RLIMIT_AS, mem_bytes, "as"))
    # RLIMIT_NPROC counts every process of the real uid and is never enforced for
    # root; the runner's cgroup covers that case.
    if max_procs and os.getuid() != 0:
        caps.append((resource.RLIMIT_NPROC, _user_process_count() + max_procs, "nproc"))
    for kind, value, name in caps:
        try:
            resource.setrlimit(kind, (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    return applied


def _user_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> bool:
    """Clear every capability (bounding set too): root loses its exemptions."""
    if os.geteuid() != 0:
        return False
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability the kernel knows
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    return _libc.capset(ctypes.byref(header), data) == 0
