"""Host resources a genome could take where no limit looked: memory outside its RSS (memfd,
/dev/shm), the disk (many files, each under the per-file limit; a huge log), sockets to
host services, and files beside an editable install."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from evolve.harness import landlock, syscalls
from evolve.runner import sandbox
from tests.conftest import LANDLOCK_ABI, ROOT, genome, leftovers, needs_landlock

HAVE_SECCOMP = syscalls.pyseccomp is not None


def _memory_cgroup_works() -> bool:
    fence = sandbox.Fence.create(8, 64 << 20)
    try:
        return fence.memory is not None
    finally:
        fence.kill_all()


HAVE_MEMORY_CGROUP = _memory_cgroup_works()


def test_memfd_memory_counts_against_the_limit(evaluate):
    """1.5 GiB in a memfd filled with write(): no RSS, no address space; the cgroup (or, without
    one, the runner's PSS + memfd measurement) stops it at the 1 GiB limit."""
    run = evaluate(genome("memfd_hog.py", MEGABYTES=1536), mem_limit_bytes=1 << 30, budget=30.0)
    assert "HELD" not in run.log, run.log[-2000:]
    assert run.result.status == "oom", (run.result.reason, run.log[-2000:])
    assert ("cgroup-memory" in run.result.sandbox) == HAVE_MEMORY_CGROUP
    assert "mem-watch" in run.result.sandbox
    if LANDLOCK_ABI:
        assert "/dev/shm blocked: PermissionError" in run.log
    assert not leftovers(run.workdir)


def test_without_a_memory_cgroup_the_runner_measures_memfd(evaluate, monkeypatch):
    """Where no memory cgroup can be made, the runner's sampled PSS + memfd + shm catches it."""
    monkeypatch.setattr(sandbox.Fence, "V2_ROOTS", ())
    monkeypatch.setattr(sandbox.Fence, "MEMORY_V1", "/nonexistent")
    run = evaluate(genome("memfd_hog.py", MEGABYTES=1536), mem_limit_bytes=1 << 30, budget=30.0)
    assert run.result.status == "oom", (run.result.reason, run.log[-2000:])
    assert "cgroup-memory" not in run.result.sandbox and "mem-watch" in run.result.sandbox
    assert run.result.peak_memory_bytes > 1 << 30  # the sample that passed the limit


def test_measured_fallback_sees_memfd(tmp_path):
    """Without a memory cgroup the runner measures: a memfd that is written but never mapped
    shows up (it would not in PSS or RSS)."""
    fd = os.memfd_create("probe")
    try:
        before = sandbox.shared_file_bytes([os.getpid()])
        os.write(fd, b"x" * (8 << 20))
        after = sandbox.shared_file_bytes([os.getpid()])
    finally:
        os.close(fd)
    assert after - before >= 8 << 20


@pytest.mark.parametrize(
    "files,file_bytes,pause,limits,what",
    [
        (64, 8 << 20, 0.05, {"max_disk_bytes": 64 << 20}, "GiB"),  # 512 MiB in files of 8 MiB
        (20000, 0, 0.0005, {"max_files": 500}, "500 files"),  # many empty files
    ],
    ids=["bytes", "files"],
)
def test_disk_use_is_capped(evaluate, files, file_bytes, pause, limits, what):
    """The runner polls the folder: a genome is stopped within one poll of passing the cap
    (here it writes 160 MB/s, so the test never writes much past the cap; a faster writer
    gets as far as its write rate times the poll interval, 0.25 s or more)."""
    run = evaluate(
        genome("disk_hog.py", FILES=files, FILE_BYTES=file_bytes, PAUSE=pause),
        budget=30.0,
        **limits,
    )
    assert "WROTE" not in run.log, run.log[-2000:]
    assert run.result.status == "crashed", (run.result.reason, run.log[-2000:])
    assert "disk use" in run.result.reason and what in run.result.reason
    assert "disk-watch" in run.result.sandbox


def test_per_file_limit_follows_the_disk_limit(evaluate):
    """RLIMIT_FSIZE is never above the disk cap: one file cannot outgrow the whole folder's
    allowance between two polls."""
    run = evaluate(
        genome("disk_hog.py", FILES=1, FILE_BYTES=48 << 20), budget=30.0, max_disk_bytes=16 << 20
    )
    assert run.result.status == "crashed" and "WROTE" not in run.log
    assert (
        "File too large" in run.result.reason
        or "disk use" in run.result.reason
        or "SIGXFSZ" in run.result.reason
    ), run.result.reason


def test_log_is_capped_with_a_marker_and_keeps_the_tail(evaluate):
    run = evaluate(genome("log_flood.py", MEGABYTES=8), max_log_bytes=1 << 20, budget=30.0)
    size = os.path.getsize(run.result.log_path)
    assert size < (1 << 20) + (256 << 10), size  # the cap, the tail, the evaluator's lines
    assert "[evolve: the log passed its cap of 1,048,576 bytes;" in run.log
    assert run.result.status == "crashed"
    assert "flooded the log and then failed" in run.result.reason  # the tail survived
    assert "log-cap" in run.result.sandbox


@pytest.mark.skipif(not HAVE_SECCOMP, reason="pyseccomp or libseccomp.so.2 is not installed")
def test_no_socket_reaches_the_host(evaluate, tmp_path):
    """UDP, TCP, netlink, and a pathname unix socket served by this process: all refused
    with EPERM before anything is reached; socketpair still works."""
    path = tmp_path / "host-service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.setblocking(False)
    try:
        run = evaluate(genome("sockets.py", UNIX_PATH=str(path)))
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    assert "LEAKED" not in run.log, run.log[-2000:]
    assert "socketpair ping True" in run.log
    assert run.result.status == "crashed" and "4 of 4 sockets refused" in run.result.reason
    assert "seccomp" in run.result.sandbox


@needs_landlock
def test_files_beside_the_package_are_unreadable(evaluate):
    """Under this editable install the repository root holds the package, its README, tests
    and archives: only the package is readable."""
    targets = [str(ROOT / "README.md"), str(ROOT / "tests" / "conftest.py"), str(ROOT)]
    archive = ROOT / "archive"
    if archive.exists():
        targets.append(str(archive))
    run = evaluate(genome("read_path.py", TARGETS=targets))
    assert "LEAKED" not in run.log
    assert run.result.status == "crashed"
    assert f"{len(targets)} of {len(targets)} reads" in run.result.reason, run.log[-2000:]


def test_read_paths_ignore_sys_path(monkeypatch):
    """A checkout on PYTHONPATH (or a .pth naming the repository root) must not open the
    folders beside the package."""
    monkeypatch.setattr(sys, "path", [str(ROOT), str(ROOT.parent), *sys.path])
    paths = landlock.python_read_paths()
    assert str(ROOT / "evolve") in paths
    for path in paths:
        assert not (ROOT / "README.md").is_relative_to(path), path
        assert not (ROOT / "archive").is_relative_to(path), path


@pytest.mark.skipif(not HAVE_SECCOMP, reason="pyseccomp or libseccomp.so.2 is not installed")
def test_deny_sockets_in_a_fresh_process(tmp_path):
    """The function the evaluator calls too: True, and every socket family refused after it."""
    import subprocess

    code = (
        "import socket, sys\n"
        "from evolve.harness.syscalls import deny_sockets\n"
        "assert deny_sockets() is True\n"
        "socket.socketpair()\n"
        "for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_DGRAM)\n"
        "        sys.exit('opened')\n"
        "    except PermissionError:\n"
        "        pass\n"
        "print('all refused')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "all refused" in done.stdout, done.stderr


def test_disk_count_sees_into_folders_made_unreadable(tmp_path):
    """A genome running as the runner's user may chmod a folder to 000 to hide its content
    from the count: the runner takes the permission back (same owner) and counts it."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "data.bin").write_bytes(os.urandom(1 << 20))
    hidden.chmod(0)
    try:
        used, entries = sandbox.disk_usage(tmp_path, 100)
    finally:
        hidden.chmod(0o700)
    assert used >= 1 << 20 and entries == 2
