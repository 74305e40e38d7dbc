"""The run archive on real files: durability under SIGKILL, locking, readers, corruption."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve.archive import EliteRule, ElitesMap, RunArchive, list_runs
from evolve.archive.shards import format_id
from evolve.errors import UserError
from evolve.record import EvalResult, Evaluation
from evolve.testkit.grids import small_grid

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "import torch\n" + "x = 1\n" * 80


def ok(bpb: float, params: int = 10**6) -> EvalResult:
    return EvalResult("ok", val_bpb=bpb, params=params, tokens=10**7, training_seconds=10.0)


def spawn(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# A writer that records evaluations forever and prints each id once add_evaluation returned.
WRITER = """
import random, sys
from evolve.archive import RunArchive
from evolve.record import EvalResult
archive = RunArchive.open(sys.argv[1], writer=True)
print("ready", flush=True)
rng = random.Random()
i = 0
while True:
    i += 1
    result = EvalResult("ok" if i % 7 else "crashed", val_bpb=rng.gauss(1.5, 0.02),
                        params=10 ** rng.randint(5, 8), tokens=10**7, training_seconds=5.0)
    source = "import torch\\n" + f"x = {rng.randint(0, 40)}\\n" * rng.randint(40, 300)
    prompt = "improve the optimizer\\n" * 200 if i % 3 == 0 else None
    record = archive.add_evaluation(result, source, generation=i // 10, idea="kill test",
                                    operator="llm", prompt=prompt)
    print(record.id, flush=True)
"""


@pytest.fixture
def run(tmp_path: Path) -> Iterator[RunArchive]:
    archive = RunArchive.create(
        tmp_path / "runs" / "r1", {"budget": 300, "dataset": "abc"}, grid=small_grid()
    )
    yield archive
    archive.close()


# --- basics ---------------------------------------------------------------------------


def test_layout_records_and_content_addressed_texts(run: RunArchive) -> None:
    rec = run.add_evaluation(
        ok(1.5), SOURCE, generation=3, parents=["e000007"], operator="llm_mutate",
        idea="use\nSwiGLU  please", prompt="P" * 10_000, response="R" * 5_000,
    )  # fmt: skip
    assert rec.id == "e000001" and rec.decision == "new_cell"
    assert rec.idea == "use SwiGLU please"
    assert (run.path / "genomes" / f"{rec.genome}.py").read_text() == SOURCE
    assert run.genome_source(rec.genome) == SOURCE
    assert run.text(rec.prompt_sha256) == "P" * 10_000
    assert run.text(rec.response_sha256) == "R" * 5_000
    shard = (run.path / "evals" / "shard-000000.json").read_text()
    assert "import torch" not in shard and "PPPP" not in shard  # big text is not inlined
    assert run.log_path("e000001") == run.path / "logs" / "e000001.log"
    assert (run.path / "logs").is_dir()
    with pytest.raises(ValueError):
        run.log_path("../etc/passwd")

    reader = RunArchive.open(run.path)
    got = reader.get("e000001")
    assert got.result.val_bpb == 1.5 and got.parents == ["e000007"]
    assert got.cell == [4, 0] and got.descriptors["model_size"] == pytest.approx(6.0)
    assert reader.config == {"budget": 300, "dataset": "abc"}
    assert reader.get("e000999") is None and reader.get("nonsense") is None
    with pytest.raises(UserError):
        reader.genome_source("f" * 64)


def test_reinserting_an_id_does_not_duplicate(run: RunArchive) -> None:
    first = run.add_evaluation(ok(1.5), SOURCE, generation=0)
    again = run.add_evaluation(ok(1.2), SOURCE, generation=0, eval_id=first.id)
    assert again.result.val_bpb == 1.5  # the stored record wins
    assert run.insert_many([first, first]) == 0
    assert run.count() == 1
    assert run.elites()[0].n == 1  # the elite saw the evaluation once


def test_shards_are_bounded_and_an_insert_rewrites_one_shard(run: RunArchive) -> None:
    records = []
    for n in range(1, 1201):
        records.append(Evaluation(format_id(n), f"{n:064x}", ok(1.5 + n * 1e-4), cell=[n % 10, 0]))
    assert run.insert_many(records) == 1200
    shards = sorted((run.path / "evals").glob("shard-*.json"))
    assert len(shards) == 3
    sizes = [len(json.loads(p.read_text())["evaluations"]) for p in shards]
    assert sizes == [499, 500, 201] and max(sizes) <= run.shards.shard_size
    before = {p: p.stat().st_ino for p in shards[:2]}
    run.add_evaluation(ok(1.4), SOURCE, generation=9)
    assert {p: p.stat().st_ino for p in shards[:2]} == before  # untouched
    assert run.count() == 1201
    reader = RunArchive.open(run.path)
    ids = [r.id for r in reader.evaluations()]
    assert ids == [format_id(n) for n in range(1, 1202)]
    assert [r.id for r in reader.evaluations_of(f"{7:064x}")] == ["e000007"]


def test_elites_generations_and_noise_survive_reopening(run: RunArchive) -> None:
    first = run.add_evaluation(ok(1.50), SOURCE, generation=0)
    rec = run.add_evaluation(ok(1.49), SOURCE + "y = 2\n", generation=0)
    assert rec.decision == "replaced"  # default noise 1e-3: margin 0.0028 < 0.01
    run.add_evaluation(EvalResult("crashed", reason="x"), SOURCE + "z\n", generation=0)
    row = run.record_generation(0, evals=3)
    assert row["coverage"] == 0.01 and row["best"] == pytest.approx(1.49)
    assert row["qd_score"] == pytest.approx(10 - 1.49)
    run.record_generation(0, evals=3)  # idempotent by generation
    run.set_noise_std(0.05)  # margin 0.14: the challenger no longer clears it
    assert run.elites()[0].genome == first.genome
    reader = RunArchive.open(run.path)
    assert reader.rule.noise_std == 0.05
    assert reader.elites() == run.elites()
    book = reader.logbook()
    assert len(book) == 1 and book[0]["evals"] == 3 and book.header[0] == "gen"
    run.close()
    writer = RunArchive.open(run.path, writer=True)
    assert writer.elites() == reader.elites()
    assert writer.rule.noise_std == 0.05
    writer.close()


def test_replacement_recorded_in_records(run: RunArchive) -> None:
    run.add_evaluation(ok(1.50), SOURCE, generation=0)
    small = run.add_evaluation(ok(1.499), SOURCE + "# a\nq = 1\n", generation=0)
    big = run.add_evaluation(ok(1.40), SOURCE + "# b\nq = 2\n", generation=0)
    assert small.decision == "kept_incumbent"  # better by 0.001 < margin 0.0028
    assert big.decision == "replaced"
    assert run.elites()[0].genome == big.genome
    assert RunArchive.open(run.path).get(big.id).decision == "replaced"


def test_reserved_ids_are_never_reused(run: RunArchive) -> None:
    lost = run.new_eval_id()  # its evaluation dies in flight
    run.close()
    writer = RunArchive.open(run.path, writer=True)
    fresh = writer.new_eval_id()
    assert int(fresh[1:]) > int(lost[1:])
    writer.close()


def test_list_runs(tmp_path: Path) -> None:
    RunArchive.create(tmp_path / "a", {"k": 1}, grid=small_grid()).close()
    RunArchive.create(tmp_path / "b", {"k": 2}, grid=small_grid()).close()
    (tmp_path / "b" / "config.json").write_text("{not json")
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("hi")
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["a", "b"]
    assert runs[0].config == {"k": 1} and runs[0].error is None
    assert runs[1].config is None and "config.json" in runs[1].error
    assert list_runs(tmp_path / "missing") == []


def test_create_refuses_existing_runs_and_bad_names(tmp_path: Path) -> None:
    RunArchive.create(tmp_path / "r", {}, grid=small_grid()).close()
    with pytest.raises(UserError, match="already exists"):
        RunArchive.create(tmp_path / "r", {}, grid=small_grid())
    with pytest.raises(UserError, match="bad run name"):
        RunArchive.create(tmp_path / ".hidden", {}, grid=small_grid())


def test_stale_temp_files_are_left_by_readers_and_removed_by_the_writer(run: RunArchive) -> None:
    run.add_evaluation(ok(1.5), SOURCE, generation=0)
    run.close()
    stale = run.path / "evals" / ".shard-000000.json.tmp-999-abcd"
    stale.write_text('{"evaluations": {"1": {"id"')  # a writer killed mid-write
    reader = RunArchive.open(run.path)
    assert reader.count() == 1 and stale.exists()
    RunArchive.open(run.path, writer=True).close()
    assert not stale.exists()


# --- locking --------------------------------------------------------------------------


def test_second_writer_in_the_same_process_is_refused(run: RunArchive) -> None:
    with pytest.raises(UserError) as err:
        RunArchive.open(run.path, writer=True)
    assert f"locked by pid {os.getpid()}" in str(err.value)
    assert RunArchive.open(run.path).count() == 0  # readers take no lock
    run.close()
    RunArchive.open(run.path, writer=True).close()  # released on close


def test_second_writer_in_another_process_is_refused(run: RunArchive) -> None:
    run.close()
    child = spawn(
        "import sys, time\nfrom evolve.archive import RunArchive\n"
        "a = RunArchive.open(sys.argv[1], writer=True)\nprint('locked', flush=True)\ntime.sleep(60)",
        str(run.path),
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as err:
            RunArchive.open(run.path, writer=True)
        assert f"locked by pid {child.pid}" in str(err.value)
        assert "kill" in str(err.value)  # says what to do
    finally:
        child.kill()
        child.wait()
    RunArchive.open(run.path, writer=True).close()  # the kernel released the dead writer's lock


# --- durability and concurrent readers -------------------------------------------------


def all_ids(path: Path) -> list[str]:
    return [r.id for r in RunArchive.open(path).evaluations()]


def replayed_elites(path: Path) -> list:
    archive = RunArchive.open(path)
    fresh = ElitesMap(archive.grid.total_cells, archive.rule)
    for r in sorted(archive.evaluations(), key=lambda r: r.seq):
        if r.status == "ok" and r.cell is not None:
            fresh.add(r.genome, r.cell, r.result.val_bpb, r.id, r.descriptors)
    return fresh.elites()


def test_sigkill_at_random_moments_loses_only_evaluations_in_flight(run: RunArchive) -> None:
    run.close()
    rng = random.Random()
    reported: list[str] = []
    for _ in range(4):
        child = spawn(WRITER, str(run.path))
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        new = out.split()
        assert new, "the child recorded nothing before it was killed"
        reported += new

        for p in (run.path / "evals").glob("shard-*.json"):  # no torn file under a real name
            json.loads(p.read_text())
        ids = all_ids(run.path)
        counts = collections.Counter(ids)
        assert all(counts[i] == 1 for i in reported), "a completed evaluation is missing or doubled"
        assert max(counts.values()) == 1
        assert len(ids) - len(reported) <= 1  # at most the one in flight per kill
        reported = ids  # the in-flight one, if it landed, is now part of the run
    # the next writer rebuilds elites that agree with the records
    RunArchive.open(run.path, writer=True).close()
    assert RunArchive.open(run.path).elites() == replayed_elites(run.path)


def test_readers_never_see_torn_files_while_a_writer_writes(run: RunArchive) -> None:
    run.close()
    child = spawn(WRITER, str(run.path))
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        reader = RunArchive.open(run.path)
        seen_counts, reads = set(), 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for p in [*(run.path / "evals").glob("shard-*.json"), run.path / "elites.json"]:
                json.loads(p.read_bytes())  # raises on a half-written file
                reads += 1
            seen_counts.add(reader.count())
            reader.elites()
            reader.summary()
        assert len(seen_counts) > 5 and reads > 20  # the writer really wrote meanwhile
    finally:
        child.kill()
        child.wait()


# --- corruption -------------------------------------------------------------------------


def test_corrupt_shard_is_a_user_error_and_nothing_is_deleted(run: RunArchive) -> None:
    run.add_evaluation(ok(1.5), SOURCE, generation=0)
    run.close()
    shard = run.path / "evals" / "shard-000000.json"
    shard.write_text('{"evaluations": {"1": {"id": "e0')
    with pytest.raises(UserError, match="shard-000000.json"):
        RunArchive.open(run.path).get("e000001")
    with pytest.raises(UserError, match="not valid JSON"):
        RunArchive.open(run.path).count()
    with pytest.raises(UserError):
        RunArchive.open(run.path, writer=True)
    assert shard.read_text() == '{"evaluations": {"1": {"id": "e0'
    shard.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a TinyDB"):
        RunArchive.open(run.path).get("e000001")


def test_corrupt_elites_and_config_are_user_errors(run: RunArchive) -> None:
    run.close()
    (run.path / "elites.json").write_text("{{{")
    with pytest.raises(UserError, match="elites.json"):
        RunArchive.open(run.path).elites()
    (run.path / "elites.json").write_text('{"elites": {"1": {"genome": "x"}}}')
    with pytest.raises(UserError, match="malformed"):
        RunArchive.open(run.path).elites()
    (run.path / "config.json").write_text("nope")
    with pytest.raises(UserError, match="config.json"):
        RunArchive.open(run.path)
    (run.path / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        RunArchive.open(run.path)
    assert (run.path / "elites.json").exists()


def test_not_a_run_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no run at"):
        RunArchive.open(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a run directory"):
        RunArchive.open(tmp_path / "file")
    with pytest.raises(UserError, match="not an evolve run"):
        RunArchive.open(tmp_path)
    RunArchive.create(tmp_path / "r", {}, grid=small_grid()).close()
    (tmp_path / "r" / "archive.json").unlink()
    with pytest.raises(UserError, match="archive.json"):
        RunArchive.open(tmp_path / "r")


def test_noise_rule_is_taken_from_the_caller(tmp_path: Path) -> None:
    archive = RunArchive.create(
        tmp_path / "r", {}, rule=EliteRule(noise_std=0.0, min_margin=0.0), grid=small_grid()
    )
    archive.add_evaluation(ok(1.50), SOURCE, generation=0)
    rec = archive.add_evaluation(ok(1.4999), SOURCE + "# x\nw = 0\n", generation=0)
    assert rec.decision == "replaced"
    archive.close()


def test_results_from_another_hardware_class_never_compete(run: RunArchive) -> None:
    home = {"class": "cuda:NVIDIA H100", "run_class": "cuda:NVIDIA H100"}
    away = {"class": "cuda:NVIDIA A10G", "run_class": "cuda:NVIDIA H100"}
    first = ok(3.0)
    first.hardware = home
    run.add_evaluation(first, "A = 1\n", generation=0)
    faster = ok(1.0)  # far better, but measured on other hardware
    faster.hardware = away
    record = run.add_evaluation(faster, "A = 2\n", generation=0)
    assert record.decision == "off_class"
    assert [e.mean for e in run.elites()] == [3.0]
    assert run.get(record.id).result.val_bpb == 1.0  # kept, just not compared
    run.close()
    with RunArchive.open(run.path, writer=True) as again:  # a resume rebuilds the map from disk
        assert [e.mean for e in again.elites()] == [3.0]


def test_atomic_write_fsyncs_the_file_before_and_the_directory_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power loss keeps the new file only if its bytes and then its name were synced."""
    from evolve.archive import atomic
    from evolve.durable import TMP_MARK

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "data.json"
    atomic.atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    tmp_name = Path(events[0][1]).name
    assert tmp_name.startswith(".data.json" + TMP_MARK)  # the temp file's bytes first
    assert events[1][1] == str(target)
    assert events[2][1] == str(tmp_path)  # then the directory holding the new name
