"""The sealed test split: the confirmed best is scored once on data selection never saw.

The archive side is checked on known histories (written through the real API);
the engine side on real runs of `evolve start` / `evolve resume`. Until the
harness scores a separate test split, a "test" evaluation scores val: these
tests check the plumbing (requested, recorded with split="test", kept out of
selection, shown) and hold either way.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.archive.pending import PendingTasks
from evolve.browse.testsplit import gap_threshold
from evolve.engine.loop import TEST_IDEA
from evolve.engine.seeding import plan_imports
from evolve.operators.base import Parent
from evolve.operators.llm.context import gather
from evolve.record import EvalResult
from tests.test_browse import A, D, as_json, build_run, ok, sha
from tests.test_browse import evolve as cli
from tests.test_engine import FAST, evolve, spawn, wait_for_evaluations


def add_test(path: Path, source: str, bpb: float | None) -> dict:
    """Store a test-split evaluation of `source`, as the engine does for a confirmed best."""
    result = (
        ok(bpb, 3_162_277, split="test")
        if bpb is not None
        else EvalResult("crashed", reason="test split: kaboom", split="test")
    )
    with RunArchive.open(path, writer=True) as archive:
        record = archive.add_evaluation(
            result, source, generation=2, parents=[sha(source)], operator="test", idea=TEST_IDEA
        )
        archive.log_path(record.id).write_text("test log\n")
    return record


@pytest.fixture
def tested(tmp_path: Path) -> Path:
    """r1 of test_browse, its confirmed best D (1.71 ± 0.01, n=3) scored 1.80 on test, and A's
    test evaluation crashed."""
    archive_dir = tmp_path / "archive"
    path = build_run(archive_dir)
    with RunArchive.open(path) as archive:
        before = archive.elites()
    record = add_test(path, D, 1.80)
    assert record.decision == "sealed_test" and record.result.split == "test"
    add_test(path, A, None)
    for writer in (False, True):  # the live map, and the one rebuilt from the records on open
        with RunArchive.open(path, writer=writer) as archive:
            assert archive.elites() == before
    return archive_dir


def test_test_records_stay_out_of_the_map_lineage_and_llm_context(tested: Path) -> None:
    steps = as_json(tested, "lineage", "r1", "e000007")
    assert (steps[-1]["n"], steps[-1]["mean"]) == (3, pytest.approx(1.71))
    with RunArchive.open(tested / "r1") as archive:
        parent = Parent(id=sha(D), source=D, mean=1.71, n=3)
        context = gather(archive, [parent])
    assert context.lineage[sha(D)][-1].after == pytest.approx(1.71)  # not (3 x 1.71 + 1.80) / 4
    assert [f["reason"] for f in context.failures] == ["boom"]  # B's crash; not the test one
    assert all(f["idea"] != TEST_IDEA for f in context.failures)


def test_show_runs_and_report_give_val_and_test_and_flag_a_large_gap(
    tested: Path, tmp_path: Path
) -> None:
    rows = {r["id"]: r for r in as_json(tested, "show", "r1")}
    d = rows["e000007"]
    assert d["best"] and (d["n"], d["mean"]) == (3, pytest.approx(1.71))
    test = d["test"]
    with RunArchive.open(tested / "r1") as archive:
        (test_id,) = [r.id for r in archive.evaluations_of(sha(D)) if r.operator == "test"]
    assert (test["id"], test["bpb"], test["status"]) == (test_id, 1.80, "ok")
    assert test["gap"] == pytest.approx(0.09) and test["overfit"]
    assert test["threshold"] == pytest.approx(2.0 * 1e-3 * (1 + 1 / 3) ** 0.5)
    assert rows["e000004"]["test"]["status"] == "crashed" and rows["e000004"]["test"]["bpb"] is None
    assert rows["e000010"]["test"] is None and not rows["e000010"]["best"]
    table = cli(tested, "show", "r1").stdout
    assert "1.8000 (+0.0900 !)" in table and "overfitted the val split" in table

    best = next(r for r in as_json(tested, "runs") if r["name"] == "r1")["best"]
    assert (best["mean"], best["n"]) == (pytest.approx(1.71), 3)
    assert best["test"]["bpb"] == 1.80 and best["test"]["overfit"]
    assert "1.8000 (+0.0900 !)" in cli(tested, "runs").stdout

    assert cli(tested, "report", "r1", "-o", str(tmp_path / "rep")).exit_code == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "best on the sealed test split" in page and "1.8000, test − val +0.0900" in page
    assert "may have overfitted the val split" in page and 'id="overfit"' in page


def test_a_gap_within_the_noise_is_not_flagged(tmp_path: Path) -> None:
    path = build_run(tmp_path)
    with RunArchive.open(path) as archive:
        rule = archive.rule
    add_test(path, D, 1.71 + 0.5 * gap_threshold(rule, 3))
    test = as_json(tmp_path, "show", "r1")[1]["test"]
    assert test["gap"] > 0 and not test["overfit"]
    assert "!" not in cli(tmp_path, "show", "r1").stdout
    assert "gap within chance" in _report_stats(tmp_path)


def _report_stats(archive_dir: Path) -> str:
    assert cli(archive_dir, "report", "r1", "-o", str(archive_dir / "rep")).exit_code == 0
    return (archive_dir / "rep" / "index.html").read_text()


def test_seeding_never_carries_test_records(tested: Path) -> None:
    new = {
        "budget": 2.0,
        "eval_tokens": 4096,
        "dataset_fingerprint": "0123456789abcdef",
        "device": "cpu",
    }
    plan = plan_imports(["r1"], None, tested, new)
    imported = {i.genome: i for i, carry in plan.imports if carry}
    assert [r.id for r in imported[sha(D)].records] == ["e000007", "e000008", "e000009"]


# --- the engine ---------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    from evolve.testkit.tiny import tiny_genome

    (tmp_path / "tiny.py").write_text(tiny_genome())
    (tmp_path / "run.toml").write_text("noise_repeats = 2\nconfirm = 2\n")
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def pending_test(run: Path) -> list:
    return [t for t in PendingTasks(run).all() if t.split == "test"]


def test_the_confirmed_best_is_scored_once_on_test_and_resume_keeps_it(workspace: Path) -> None:
    run = workspace / "archive" / "t1"
    proc = spawn(
        "start",
        "--pop",
        "2",
        "--generations",
        "1",
        "--name",
        "t1",
        "--seed-genome",
        "tiny.py",
        "--config",
        "run.toml",
        *FAST,
        cwd=workspace,
    )
    wait_for_evaluations(run, 2, proc)  # the seed, twice: confirmed (confirm = 2)
    deadline = time.monotonic() + 60
    while not pending_test(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # stop while its test evaluation is queued or running
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (task,) = pending_test(run)  # kept for resume, with its split
    assert (task.kind, task.operator, task.parents) == ("test", "test", [task.genome])

    done = evolve("resume", "t1", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert PendingTasks(run).all() == []
    with RunArchive.open(run) as archive:
        records = list(archive.evaluations())
        (elite,) = archive.elites()
        gens = list(archive.logbook())
    tests = [r for r in records if r.result.split == "test"]
    assert [r.id for r in tests] == [task.id]  # once: not lost, not repeated
    (test,) = tests
    assert (test.genome, test.operator, test.status) == (elite.genome, "test", "ok")
    assert test.decision == "sealed_test" and test.id not in elite.eval_ids
    assert elite.n == 2 and [g["evals"] for g in gens] == [2]  # the logbook counts val only
    assert all(r.result.split == "val" for r in records if r.id != test.id)

    bpb = test.result.val_bpb
    assert f"confirmed best: val {elite.mean:.4f} ± {elite.std:.4f} (n=2), test {bpb:.4f}" in (
        done.stdout
    )
    row = next(r for r in as_json(workspace / "archive", "runs") if r["name"] == "t1")
    assert row["best"]["test"]["id"] == test.id
    assert row["best"]["test"]["bpb"] == pytest.approx(test.result.val_bpb)
