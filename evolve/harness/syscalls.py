"""Seccomp: system calls a sandboxed process (genome or evaluator) may not make at all.

Landlock (see `landlock`) controls paths and TCP, but not every way out of a process:
a UDP socket, a pathname unix socket (the Docker daemon, a database, the D-Bus of the
host), netlink, or io_uring (whose operations bypass seccomp) reach host services;
System V shared memory and message queues, and POSIX message queues, outlive the
process and are counted by no limit of ours. This filter makes those calls fail
with EPERM. `socketpair` stays allowed: it makes a pair of already-connected
sockets that reach nothing else, and torch and multiprocessing use it.

The filter is built with libseccomp through `pyseccomp` (a ctypes binding with the
API of libseccomp's own Python module). Without either, `deny_sockets` returns False
and the runner records that the layer was not active.
"""

from __future__ import annotations

import errno

try:  # at import, so the zygote pays for finding libseccomp once (it runs ldconfig)
    import pyseccomp
except (ImportError, OSError):  # the binding, or libseccomp.so.2, is missing
    pyseccomp = None

# socket(): every family (inet, inet6, unix, netlink, packet...). io_uring: its
# IORING_OP_SOCKET and IORING_OP_CONNECT make sockets without calling socket().
DENIED = ("socket", "io_uring_setup", "shmget", "msgget", "mq_open")


def deny_sockets() -> bool:
    """Forbid new sockets (and the calls in DENIED) to this process and all it starts.

    Returns True when the filter is active. Irreversible, inherited by children and
    across exec; sets no_new_privs, which the Landlock layer sets anyway.
    """
    if pyseccomp is None:
        return False
    try:
        rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
        try:  # every thread of the process, not only the calling one (libseccomp >= 2.2)
            rules.set_attr(pyseccomp.Attr.CTL_TSYNC, 1)
        except (OSError, ValueError, RuntimeError):
            pass
        for name in DENIED:
            try:
                rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
            except (OSError, ValueError, RuntimeError):
                if name == "socket":  # the point of the filter; the rest may be unknown here
                    raise
        rules.load()
    except (OSError, ValueError, RuntimeError):
        return False
    return True
