"""Browsing commands on real archives, written through the RunArchive API without training.

`build_run` writes a small, known history (a seed, children, a crash, re-evaluations)
so every number the commands print can be checked. Other browse/report/seed tests
import it from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.archive import Descriptor, Grid, RunArchive
from evolve.archive.pending import PendingTasks, Task
from evolve.cli import cli
from evolve.config import RunConfig
from evolve.record import EvalResult
from evolve.testkit.grids import small_grid
from evolve.testkit.tiny import set_constants, tiny_genome

ROOT = Path(__file__).resolve().parents[1]
S0 = tiny_genome()
A = set_constants(S0, LEARNING_RATE=4e-3)
B = set_constants(A, N_LAYER=2)
C = set_constants(A, N_EMBD=48)
D = set_constants(C, WEIGHT_DECAY=0.05)
E = set_constants(S0, MLP_RATIO=2)
FINGERPRINT = {
    "dataset": "builtin:stdlib",
    "dataset_fingerprint": "0123456789abcdef",
    "device": "cpu",
    "host": "test",
    "torch": "x",
}


def sha(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def ok(bpb: float, params: int, **extra: object) -> EvalResult:
    extra.setdefault("seq_len", 64)  # measured from the exported graph: a descriptor of new runs
    return EvalResult(
        "ok", val_bpb=bpb, params=params, tokens=10**6, training_seconds=2.0, budget=2.0, **extra
    )  # type: ignore[arg-type]


def stored_config(name: str, fingerprint: dict | None = None, **config: object) -> dict:
    run = RunConfig(**{"name": name, "budget": 2.0, "eval_tokens": 4096, "pop": 2, **config})
    return {
        "config": run.to_dict(),
        "seeds": [sha(S0)],
        "fingerprint": fingerprint or FINGERPRINT,
        "created": time.time(),
    }


# (source, val_bpb or None for a crash, params, generation, parent, operator, idea)
HISTORY = [
    (S0, 2.00, 10**5, 0, None, "seed", "seed genome"),
    (S0, 2.02, 10**5, 0, None, "seed", "seed genome"),
    (S0, 1.98, 10**5, 0, None, "seed", "seed genome"),
    (A, 1.90, 10**5, 1, S0, "hyper_mutate", "raise the learning rate to 4e-3"),
    (B, None, 10**5, 1, A, "hyper_mutate", "two layers"),
    (C, 1.80, 3_162_277, 1, A, "hyper_mutate", "wider model"),
    (D, 1.70, 3_162_277, 2, C, "hyper_mutate", "less weight decay"),
    (D, 1.72, 3_162_277, 2, D, "reeval", "re-evaluation of the best"),
    (D, 1.71, 3_162_277, 2, D, "reeval", "re-evaluation of the best"),
    (E, 1.60, 31_622_776, 2, S0, "hyper_mutate", "narrower MLP"),
]
# e000007 (D): confirmed best, 1.71 ± 0.01 (n=3); e000010 (E): lower mean 1.60 but n=1.


def build_run(
    archive_dir: Path,
    name: str = "r1",
    *,
    grid: Grid | None = None,
    history: list | None = None,
    generations: int | None = 3,
    fingerprint: dict | None = None,
    **config: object,
) -> Path:
    """A finished run with HISTORY's evaluations, logs and generations, through the real API."""
    path = archive_dir / name
    with RunArchive.create(
        path,
        stored_config(name, fingerprint, generations=generations, **config),
        grid=grid or small_grid(),
    ) as archive:
        for source, bpb, params, gen, parent, operator, idea in history or HISTORY:
            result = ok(bpb, params) if bpb is not None else EvalResult("crashed", reason="boom")
            record = archive.add_evaluation(
                result,
                source,
                generation=gen,
                operator=operator,
                parents=[sha(parent)] if parent else [],
                idea=idea,
            )
            archive.log_path(record.id).write_text(f"log of {record.id}\nstep 1 loss 5.0\n")
        for gen in range(1 + max(h[3] for h in history or HISTORY)):
            archive.record_generation(gen, 3)
    return path


@pytest.fixture(scope="session")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("template") / "archive")


@pytest.fixture
def runs(tmp_path: Path, built_run: Path) -> Path:
    """An archive directory holding a copy of the run r1 (built once: fsyncs are slow)."""
    shutil.copytree(built_run, tmp_path / "archive" / "r1")
    return tmp_path / "archive"


def evolve(archive_dir: Path, *args: str) -> object:
    """Run the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(
        cli, [*args, "--archive-dir", str(archive_dir)], catch_exceptions=False
    )


def as_json(archive_dir: Path, *args: str) -> object:
    result = evolve(archive_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- runs ---------------------------------------------------------------------------------


def test_runs_lists_every_run_with_status_and_confirmed_best(runs: Path) -> None:
    build_run(runs, "open-ended", generations=None)
    crashed = build_run(runs, "killed", generations=None)
    PendingTasks(crashed).put(Task(id="e000011", gen=3, kind="child", genome=sha(E), seed=1))
    stopped = build_run(runs, "ctrl-c", generations=None)
    PendingTasks(stopped).put(
        Task(
            id="e000011",
            gen=3,
            kind="child",
            genome=sha(E),
            seed=1,
            attempts=[{"status": "interrupted", "at": time.time() + 1}],
        )
    )
    rows = {r["name"]: r for r in as_json(runs, "runs")}
    assert {n: r["status"] for n, r in rows.items()} == {
        "r1": "finished",
        "open-ended": "stopped",
        "killed": "crashed",
        "ctrl-c": "stopped",
    }
    r1 = rows["r1"]
    assert (r1["generations"], r1["planned_generations"], r1["evaluations"]) == (3, 3, 10)
    assert r1["best"]["mean"] == pytest.approx(1.71) and r1["best"]["n"] == 3
    assert r1["best"]["confirmed"] and r1["coverage"] == pytest.approx(3 / 100)
    assert (r1["budget"], r1["device"]) == (2.0, "cpu") and r1["started"] > 0

    table = evolve(runs, "runs")
    assert table.exit_code == 0
    assert "r1" in table.stdout and "finished" in table.stdout and "1.7100 ± 0.0100" in table.stdout


def test_runs_reports_an_unreadable_run_without_hiding_the_others(runs: Path) -> None:
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    rows = {r["name"]: r for r in as_json(runs, "runs")}
    assert rows["broken"]["status"] == "unreadable" and "cannot be read" in rows["broken"]["error"]
    assert rows["r1"]["status"] == "finished"


# --- show, map ------------------------------------------------------------------------------


def test_show_lists_elites_best_first_with_their_origin(runs: Path) -> None:
    rows = as_json(runs, "show", "r1")
    assert [r["id"] for r in rows] == ["e000010", "e000007", "e000004"]
    e, d, a = rows
    assert (d["n"], d["mean"], d["params"]) == (3, pytest.approx(1.71), 3_162_277)
    assert d["std"] == pytest.approx(0.01) and d["eval_ids"] == ["e000007", "e000008", "e000009"]
    assert (d["parent"], d["operator"], d["idea"], d["generation"]) == (
        "e000006",
        "hyper_mutate",
        "less weight decay",
        2,
    )
    assert a["parent"] == "e000001" and e["code_size"] > 50
    table = evolve(runs, "show", "r1").stdout
    assert table.index("e000010") < table.index("e000007") < table.index("e000004")
    assert "narrower MLP" in table and "1.7100 ± 0.0100" in table


def test_map_draws_the_grid_with_axes_and_bin_edges(runs: Path) -> None:
    out = evolve(runs, "map", "r1").stdout
    assert "code_size (rows) × model_size (columns)" in out
    assert "5–5.5" in out and "50–105" in out  # bin edges of both axes
    assert "1.6000" in out and "3/100 cells filled" in out
    data = as_json(runs, "map", "r1")
    assert data["shown"] == ["model_size", "code_size"] and len(data["cells"]) == 3
    assert {(c["x"], c["y"], c["id"]) for c in data["cells"]} == {
        (2, 0, "e000004"),
        (4, 0, "e000007"),
        (6, 0, "e000010"),
    }


def test_map_of_three_descriptors_shows_the_first_two_and_says_so(tmp_path: Path) -> None:
    grid = Grid(
        [
            Descriptor("model_size", 4, 9, 5),
            Descriptor("code_size", 50, 600, 2),
            Descriptor("tokens", 5, 7, 4),
        ]
    )
    build_run(tmp_path, "g3", grid=grid)
    out = evolve(tmp_path, "map", "g3").stdout
    assert "3 descriptors; showing model_size × code_size" in out and "over tokens" in out
    assert as_json(tmp_path, "map", "g3")["note"].startswith("the grid has 3 descriptors")


# --- one genome: genome, diff, lineage, log, export -----------------------------------------------


def test_genome_by_evaluation_id_and_by_hash_prefix(runs: Path) -> None:
    assert evolve(runs, "genome", "r1", "e000007").stdout == D
    assert evolve(runs, "genome", "r1", sha(E)[:8]).stdout == E
    assert evolve(runs, "genome", "r1", sha(E).upper()[:10]).stdout == E


def test_ambiguous_prefix_and_unknown_ids_are_clear_errors(runs: Path) -> None:
    seen: dict[str, str] = {}
    for i in count():  # two sources whose hashes share the first 6 hex digits
        source = f"x = {i}\n"
        twin = seen.setdefault(sha(source)[:6], source)
        if twin != source:
            break
    with RunArchive.open(runs / "r1", writer=True) as archive:
        archive.put_genome(twin)
        archive.put_genome(source)
    cases = {
        ("genome", "r1", sha(source)[:6]): "is ambiguous",
        ("genome", "r1", "e000099"): "no evaluation e000099 in run r1",
        ("genome", "r1", "abcdef0123"): "no genome abcdef0123 in run r1",
        ("genome", "r1", "12ab"): "is not an evaluation id or a genome hash",
        ("show", "nope"): "no run 'nope'",
        ("diff", "r1", "e000001"): "e000001 has no parent in run r1",
        ("log", "r1", "e000077"): "no evaluation e000077",
    }
    for args, message in cases.items():
        result = evolve(runs, *args)
        assert result.exit_code == 2, args
        assert message in result.stderr and "Traceback" not in result.output, args
    assert "runs under" in evolve(runs, "show", "nope").stderr  # and it names the runs that exist


def test_diff_against_the_parent_by_default_and_between_two_ids(runs: Path) -> None:
    out = evolve(runs, "diff", "r1", "e000007").stdout
    assert out.startswith("--- e000006 (") and "+++ e000007 (" in out
    assert "-WEIGHT_DECAY = 0.1" in out and "+WEIGHT_DECAY = 0.05" in out
    assert evolve(runs, "diff", "r1", "e000009").stdout.count("+WEIGHT_DECAY") == 1  # re-evaluation
    both = evolve(runs, "diff", "r1", "e000004", "e000010").stdout
    assert "-LEARNING_RATE = 0.004" in both and "+MLP_RATIO = 2" in both


def test_lineage_shows_each_change_and_its_delta(runs: Path) -> None:
    steps = as_json(runs, "lineage", "r1", "e000008")
    assert [s["id"] for s in steps] == ["e000001", "e000004", "e000006", "e000007"]
    assert [s["idea"] for s in steps][1:] == [
        "raise the learning rate to 4e-3",
        "wider model",
        "less weight decay",
    ]
    assert steps[0]["delta"] is None
    assert [round(s["delta"], 4) for s in steps[1:]] == [-0.1, -0.1, -0.09]
    out = evolve(runs, "lineage", "r1", "e000007").stdout
    assert "wider model" in out and "-0.0900" in out


def test_log_prints_the_evaluation_log(runs: Path) -> None:
    assert evolve(runs, "log", "r1", "e000005").stdout.startswith("log of e000005")
    (runs / "r1" / "logs" / "e000005.log").unlink()
    missing = evolve(runs, "log", "r1", "e000005")
    assert missing.exit_code == 2 and "no log for e000005" in missing.stderr


def test_export_defaults_to_the_confirmed_best(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.py"
    result = evolve(runs, "export", "r1", "-o", str(out))
    assert result.exit_code == 0 and out.read_text() == D  # not E: lower mean, but n=1
    assert "e000007" in result.stdout and "unconfirmed" not in result.stderr
    data = as_json(runs, "export", "r1", "-o", str(out))
    assert (data["id"], data["genome"], data["confirmed"]) == ("e000007", sha(D), True)
    assert not as_json(runs, "export", "r1", "e000010", "-o", str(out))["confirmed"]
    assert out.read_text() == E


def test_export_without_a_confirmed_elite_says_it_is_unconfirmed(tmp_path: Path) -> None:
    build_run(tmp_path, "young", history=HISTORY[3:7])
    out = tmp_path / "best.py"
    result = evolve(tmp_path, "export", "young", "-o", str(out))
    assert result.exit_code == 0 and out.read_text() == D
    assert "unconfirmed" in result.stderr and "fewer than the 3" in result.stderr


# --- while the run is writing ------------------------------------------------------------------

WRITER = """
import sys, time
from evolve.archive import RunArchive
from evolve.record import EvalResult
archive = RunArchive.open(sys.argv[1], writer=True)
print("ready", flush=True)
for i in range(10_000):
    source = "import torch\\n" + f"x = {i}\\n" * 60
    result = EvalResult("ok", val_bpb=1.9 - i * 1e-4, params=10 ** (4 + i % 5), tokens=10**6,
                        training_seconds=2.0)
    archive.add_evaluation(result, source, generation=5, operator="llm", idea=f"idea {i}",
                           parents=[sys.argv[2]])
    time.sleep(0.01)
"""


def test_every_command_works_while_a_writer_holds_the_lock(runs: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(runs / "r1"), sha(D)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        seen: list[int] = []
        deadline = time.monotonic() + 120  # a loaded CI disk can hold one fsync for seconds
        while True:  # read while the writer writes, until we have seen it write
            row = next(r for r in as_json(runs, "runs") if r["name"] == "r1")
            assert row["status"] == "running"
            seen.append(row["evaluations"])
            assert as_json(runs, "show", "r1")[0]["mean"] < 1.9
            assert len(as_json(runs, "map", "r1")["cells"]) >= 3
            with RunArchive.open(runs / "r1") as archive:  # read-only, like the commands
                newest = max(r.id for r in archive.evaluations())
            if newest > "e000010":  # the writer has written
                steps = as_json(runs, "lineage", "r1", newest)
                assert steps[-2]["id"] == "e000007"  # the child of D written by the other process
                assert evolve(runs, "diff", "r1", newest).exit_code == 0
                if len(seen) >= 2 and seen[0] < seen[-1]:
                    break  # the writer kept writing while we read
            assert time.monotonic() < deadline, f"the writer wrote nothing new: {seen}"
            time.sleep(0.3)
        assert evolve(runs, "report", "r1", "-o", str(tmp_path / "rep")).exit_code == 0
        assert (runs / "r1" / "lock").read_text().strip() == str(writer.pid)  # never ours
    finally:
        writer.kill()
        writer.wait()
    row = next(r for r in as_json(runs, "runs") if r["name"] == "r1")
    assert row["status"] == "finished"  # the lock died with the writer; no work was pending
