"""Landlock: the kernel's unprivileged sandbox, applied by a process to itself.

The genome and the evaluator call `restrict()` before any untrusted byte runs.
Afterwards the process (and everything it forks) can read only the listed
paths, write only its own working directory, open no TCP connection, and
neither signal nor ptrace processes outside the sandbox. On kernels without
Landlock (< 5.13) `restrict()` returns False and the runner records that only
the basic layers (process group, rlimits, scrubbed environment) were active.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # same on x86_64 and arm64
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_DIR_WRITE = sum(1 << i for i in range(4, 13))  # remove/make dir, file, sock, fifo, sym...
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
_NET_ALL = (1 << 0) | (1 << 1)  # bind and connect TCP
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals

READ = EXECUTE | READ_FILE | READ_DIR


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """Highest Landlock ABI the kernel offers; 0 when there is none."""
    version = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    rights = READ | WRITE_FILE | _DIR_WRITE
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock {what}: {os.strerror(err)}")
    return result


def restrict(
    read: Iterable[str],
    write: Iterable[str],
    devices: Iterable[str] = (),
    sealed: Iterable[str] = (),
) -> int:
    """Confine this process; return the ABI used (0: no Landlock on this kernel).

    `read`: paths (dirs or files) readable and executable, except the `sealed`
    ones below them (see `carve`). `write`: paths with full access. `devices`:
    device files that may be opened read-write with ioctl (GPU nodes). Missing
    paths are skipped.
    """
    abi = abi_version()
    if abi == 0:
        return 0
    read = carve(read, sealed)
    handled = _fs_rights(abi)
    fields = [("fs", ctypes.c_uint64)]
    values = [handled]
    if abi >= 4:
        fields.append(("net", ctypes.c_uint64))
        values.append(_NET_ALL)
    if abi >= 6:
        fields.append(("scoped", ctypes.c_uint64))
        values.append(_SCOPE_ALL)
    attr_type = type("RulesetAttr", (ctypes.Structure,), {"_fields_": fields})
    attr = attr_type(*values)
    ruleset = _check(
        _libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0),
        "create_ruleset",
    )
    try:
        device_rights = READ_FILE | WRITE_FILE | (IOCTL_DEV if abi >= 5 else 0)
        for paths, rights in ((read, READ), (write, handled), (devices, device_rights)):
            for path in paths:
                _add_path(ruleset, path, rights & handled)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(_RESTRICT_SELF, ruleset, 0), "restrict_self")
    finally:
        os.close(ruleset)
    return abi


def carve(allowed: Iterable[str], sealed: Iterable[str]) -> list[str]:
    """`allowed` with the `sealed` paths cut out.

    Landlock only grants, and a rule on a folder covers everything below it, so
    a folder that holds a sealed path is replaced by its entries, down the path
    to the sealed one, which gets no rule. This is how the sources of held-out
    text (the builtin corpus's part of the standard library) stay unreadable
    while the rest of the Python installation is readable.
    """
    sealed = {os.path.realpath(p) for p in sealed}
    out: list[str] = []

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if any(real == s or real.startswith(s + "/") for s in sealed):
            return
        if not any(s.startswith(real.rstrip("/") + "/") for s in sealed):
            out.append(path)
            return
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            add(entry.path)

    for path in allowed:
        add(path)
    return list(dict.fromkeys(out))


def _add_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_ONLY
        rule = _PathBeneath(rights, fd)
        _check(
            _libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0), "add_rule"
        )
    finally:
        os.close(fd)


SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys")
DEVICE_FILES = (
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


def python_read_paths() -> list[str]:
    """What an interpreter with torch needs to read: the Python installation (prefixes,
    standard library, site-packages), the system's folders and the `evolve` package.

    Never `sys.path` as such: a checkout on PYTHONPATH, or the root of an editable
    install, would open the folders beside the package (archives with every genome and
    log, data, notes) to every genome. Only the package folder itself is readable, not
    what is next to it.
    """
    import site
    import sys
    import sysconfig

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        package,
        *SYSTEM_READ,
    }
    paths.update(
        sysconfig.get_paths().get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user:
        paths.add(user)
    return sorted(p for p in paths if p and os.path.isabs(p) and os.path.exists(p))


def device_paths() -> list[str]:
    """Device nodes a training process may open: the harmless ones and the GPUs."""
    gpus = [f"/dev/{name}" for name in os.listdir("/dev") if name.startswith("nvidia")]
    return [p for p in (*DEVICE_FILES, *gpus) if os.path.exists(p)]
