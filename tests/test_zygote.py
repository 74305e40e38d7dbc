"""Zygotes: reused while the harness is unchanged, replaced when it changes or dies, closed
when idle, and a zygote that dies mid-evaluation costs a retry (`lost`), never a genome's record."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from evolve.runner import sandbox, zygotes
from tests.conftest import genome, leftovers

HANG = genome("hang.py").replace(
    "run = session()\n", "run = session()\nprint('running', flush=True)\n"
)


def _zygote(threads: int = 1) -> zygotes.Zygote:
    return zygotes.get(threads, None, sandbox.harness_hashes())


def _hang_in_background(evaluate, log: Path, **settings) -> tuple[threading.Thread, dict]:
    """A genome that spins forever, evaluated in a thread; returns once it is training."""
    box: dict = {}
    thread = threading.Thread(
        target=lambda: box.update(run=evaluate(HANG, budget=60.0, **settings))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not (log.exists() and "running" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return thread, box


def test_zygote_is_reused_and_replaced_when_the_harness_changes(evaluate):
    evaluate(genome("syntax_error.txt"))
    first = _zygote()
    assert _zygote() is first and first.alive()
    stale = {**sandbox.harness_hashes(), "session.py": "0" * 64}
    replaced = zygotes.get(1, None, stale)
    assert replaced is not first and replaced.pid != first.pid
    assert not first.alive() and first.process.returncode is not None
    assert _zygote() is not replaced  # and back: the hashes differ again


def test_dead_zygote_mid_evaluation_is_lost_not_crashed(evaluate, tmp_path):
    evaluate(genome("syntax_error.txt"))  # the slot's zygote is up
    victim = _zygote()
    thread, box = _hang_in_background(evaluate, tmp_path / "logs" / "2.log")
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive(), "the runner did not notice its zygote died"
    run = box["run"]
    assert run.result.status == "lost", (run.result.status, run.result.reason)
    assert "zygote" in run.result.reason
    assert not leftovers(run.workdir), "the genome outlived its zygote"
    again = evaluate(genome("syntax_error.txt")).result  # a fresh zygote takes over
    assert again.status == "crashed" and "SyntaxError" in again.reason
    assert _zygote().pid != victim.pid


def test_closing_a_zygote_kills_its_children(evaluate, tmp_path):
    thread, box = _hang_in_background(evaluate, tmp_path / "logs" / "1.log")
    _zygote().close()  # the zygote the running evaluation was forked from
    thread.join(30)
    assert box["run"].result.status == "lost"
    assert not leftovers(box["run"].workdir)


def test_a_threaded_process_is_not_forked():
    """Only the forking thread survives fork(): a zygote with threads must refuse to start."""
    from evolve.harness.zygote import _unsafe_to_fork

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert "threads" in (_unsafe_to_fork() or "")
    finally:
        stop.set()
        thread.join()


def test_a_frozen_zygote_does_not_hang_the_runner(evaluate, tmp_path):
    """A zygote that stops answering (here SIGSTOP) is killed, and its children with it."""
    evaluate(genome("syntax_error.txt"))
    frozen = _zygote()
    cancel = threading.Event()
    thread, box = _hang_in_background(evaluate, tmp_path / "logs" / "2.log", cancel=cancel)
    os.kill(frozen.pid, signal.SIGSTOP)
    cancel.set()
    thread.join(zygotes.STOP_TIMEOUT + 20)
    assert not thread.is_alive(), "the runner waits forever for a frozen zygote"
    assert box["run"].result.status == "interrupted"
    assert not leftovers(box["run"].workdir)
    assert not frozen.alive()


def test_idle_zygotes_are_closed_busy_ones_kept(evaluate, tmp_path, monkeypatch):
    """A process that used many environments (a Ray worker) keeps only the zygotes in use."""
    monkeypatch.setattr(zygotes, "IDLE_TTL", 0.0)
    cancel = threading.Event()
    thread, _ = _hang_in_background(evaluate, tmp_path / "logs" / "1.log", cancel=cancel)
    busy = _zygote()
    other = _zygote(threads=2)  # another environment: the busy zygote has a child, so it stays
    assert busy.alive() and other.alive() and busy is not other
    cancel.set()
    thread.join(30)
    time.sleep(0.05)
    assert _zygote(threads=2) is other
    assert not busy.alive(), "an idle zygote of another environment was kept"
