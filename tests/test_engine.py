"""End-to-end runs of `evolve start` / `evolve resume` as a user would run them.

Real subprocesses, real evaluations (a tiny genome, a 2 s budget), real archives.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.archive.elites import best_elite
from evolve.archive.pending import PendingTasks
from evolve.testkit.grids import small_grid
from evolve.testkit.tiny import tiny_genome

FAST = ["--budget", "2", "--eval-tokens", "4096", "--devices", "cpu:2"]


def evolve(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evolve.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def spawn(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evolve.cli", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "tiny.py").write_text(tiny_genome())
    (tmp_path / "run.toml").write_text("noise_repeats = 2\nconfirm = 2\n")
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def wait_for_evaluations(
    run: Path, count: int, proc: subprocess.Popen, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if (run / "config.json").exists():
            with RunArchive.open(run) as archive:
                if archive.count() >= count:
                    return
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} evaluations after {timeout} s")


def wait_for_a_fresh_evaluation(run: Path, proc: subprocess.Popen, timeout: float = 120) -> str:
    """Return the id of an evaluation that started within the last poll (its log just appeared,
    its task is pending): it is surely in flight for about the budget's 2 s more."""
    seen = set((run / "logs").glob("*.log"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        logs = set((run / "logs").glob("*.log"))
        for log in logs - seen:
            if (run / "pending" / f"{log.stem}.json").exists():
                return log.stem
        seen |= logs
        time.sleep(0.05)
    raise AssertionError(f"no evaluation started within {timeout} s")


def snapshot(run: Path) -> dict[str, dict]:
    with RunArchive.open(run) as archive:
        return {r.id: r for r in archive.evaluations()}


def test_interrupt_kill_and_resume_keep_every_evaluation_once(workspace: Path) -> None:
    run = workspace / "archive" / "r1"
    start = [
        "start",
        "--pop",
        "2",
        "--generations",
        "3",
        "--name",
        "r1",
        "--seed-genome",
        "tiny.py",
        "--config",
        "run.toml",
        *FAST,
    ]

    # 1. Ctrl-C: in-flight work is recorded as interrupted and the command says how to resume.
    proc = spawn(*start, cwd=workspace)
    wait_for_evaluations(run, 1, proc)
    # Not at any moment: between generations nothing is in flight and nothing is interrupted.
    in_flight = wait_for_a_fresh_evaluation(run, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "resume with: evolve resume" in out
    interrupted = [a for t in PendingTasks(run).all() for a in t.attempts]
    assert interrupted and all(a["status"] == "interrupted" for a in interrupted)
    assert in_flight in {t.id for t in PendingTasks(run).all() if t.attempts}
    before = snapshot(run)

    # 2. kill -9 at a random moment of the resumed run.
    proc = spawn("resume", "r1", cwd=workspace)
    wait_for_evaluations(run, len(before) + 1, proc)
    time.sleep(random.uniform(0.0, 3.0))
    proc.kill()
    proc.wait()
    after_kill = snapshot(run)
    for eval_id, record in before.items():  # nothing completed was lost or rewritten
        assert after_kill[eval_id] == record

    # 3. resume to the end: every planned evaluation exactly once, none pending.
    done = evolve("resume", "r1", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout
    final = snapshot(run)
    for eval_id, record in after_kill.items():
        assert final[eval_id] == record
    assert PendingTasks(run).all() == []
    with RunArchive.open(run) as archive:
        records = list(archive.evaluations())
        gens = [row["gen"] for row in archive.logbook()]
        best = min(archive.elites(), key=lambda e: e.mean)
        elites = archive.elites()
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids))
    tests = [r for r in records if r.result.split == "test"]  # the sealed test split
    tested = [r.genome for r in tests]
    assert len(tested) == len(set(tested))  # each confirmed best scored once, kills or not
    confirmed = best_elite(elites, 2)
    assert confirmed.genome in tested and not {r.id for r in tests} & set(confirmed.eval_ids)
    children = [r for r in records if r.operator not in ("reeval", "race", "test")]
    assert len(children) == 6  # 3 generations x pop 2, seeds included
    assert sum(r.operator == "seed" for r in records) == 2  # noise_repeats = 2
    assert gens == [0, 1, 2]
    assert best.n >= 2  # the reported best is confirmed (confirm = 2)
    assert all(Path(archive.log_path(i)).exists() for i in ids)


def write_corrupt_run(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{not json")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["start", "--pop", "0"], "pop is 0"),
        (["start", "--budget", "-5"], "budget is -5"),
        (["start", "--seed-genome", "missing.py"], "seed genome missing.py does not exist"),
        (
            ["start", "--seed-genome", "tiny.py", "--config", "bad.toml"],
            "unknown behaviour descriptor",
        ),
        (["start", "--config", "nope.toml"], "config file nope.toml does not exist"),
        (
            ["start", "--seed-genome", "tiny.py", "--selection", "foo"],
            "unknown selection method 'foo'",
        ),
        (
            ["start", "--seed-genome", "tiny.py", "--strategy", "hill"],
            "unknown search strategy 'hill'",
        ),
        (
            ["start", "--seed-genome", "tiny.py", "--config", "ops.toml"],
            "unknown operator 'hyper_mutat'",
        ),
        (["resume", "nothing-here"], "no run at"),
        (["resume", "broken"], "broken"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(workspace: Path, args, expected) -> None:
    (workspace / "bad.toml").write_text(
        'descriptors = [{name = "beauty", low = 0, high = 1, bins = 3}]\n'
    )
    (workspace / "ops.toml").write_text("[operators]\nhyper_mutat = 1\n")
    write_corrupt_run(workspace / "archive" / "broken")
    result = evolve(*args, cwd=workspace)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert (workspace / "archive" / "broken" / "config.json").read_text() == "{not json"
    assert [p.name for p in (workspace / "archive").iterdir()] == ["broken"]  # no run folder left


def test_a_locked_run_refuses_a_second_writer(workspace: Path) -> None:
    run = workspace / "archive" / "held"
    archive = RunArchive.create(run, {"config": {}, "seeds": []}, grid=small_grid())
    try:
        result = evolve("resume", "held", cwd=workspace)
    finally:
        archive.close()
    assert result.returncode == 2
    assert f"pid {os.getpid()}" in result.stderr
    assert json.loads((run / "config.json").read_text()) == {"config": {}, "seeds": []}


# Runs `evolve` with os.replace wrapped: the first time a record shard is about to be renamed
# into place the process dies (as kill -9 would), after writing the ids that shard adds to argv[1].
DIE_STORING = """
import json, os, sys
from pathlib import Path
real_replace, note = os.replace, Path(sys.argv.pop(1))
def replace(src, dst):
    if Path(dst).name.startswith("shard-"):
        docs = json.loads(Path(src).read_text())
        note.write_text(json.dumps([d["id"] for t in docs.values() for d in t.values()]))
        os._exit(137)
    real_replace(src, dst)
os.replace = replace
sys.argv[0] = "evolve"
from evolve.cli import main
main()
"""


def test_a_task_stays_pending_until_its_record_is_stored(workspace: Path) -> None:
    """Killed while storing a record: the task is still pending, so resume evaluates it again."""
    run, note = workspace / "archive" / "r1", workspace / "storing.json"
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            DIE_STORING,
            str(note),
            "start",
            "--pop",
            "2",
            "--generations",
            "1",
            "--name",
            "r1",
            "--seed-genome",
            "tiny.py",
            "--config",
            "run.toml",
            *FAST,
        ],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert died.returncode == 137, died.stderr
    storing = json.loads(note.read_text())
    assert storing  # the record that was being stored when the process died
    with RunArchive.open(run) as archive:
        stored = {r.id for r in archive.evaluations()}
    pending = {t.id for t in PendingTasks(run).all()}
    assert set(storing) - stored
    assert set(storing) - stored <= pending, "an evaluation was neither stored nor pending"
