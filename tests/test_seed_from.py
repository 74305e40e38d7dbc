"""Seeding a new run from past archives: carry-over or re-evaluation, re-binning, origin, picks.

Most tests plan and apply imports on real archives written without training; two
run `evolve start --seed-from` end to end (one carries over, one re-evaluates for real).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.archive import Descriptor, Grid, RunArchive
from evolve.archive.pending import PendingTasks
from evolve.engine.seeding import apply_imports, parse_spec, plan_imports, without_default_seed
from evolve.engine.setup import read_seed
from evolve.errors import UserError
from evolve.harness.data import prepare
from evolve.record import Evaluation
from evolve.testkit.grids import small_grid
from tests.test_browse import FINGERPRINT, S0, A, D, E, as_json, build_run, ok, sha, stored_config

SAME = {
    "budget": 2.0,
    "eval_tokens": 4096,
    "dataset_fingerprint": FINGERPRINT["dataset_fingerprint"],
    "device": "cpu",
}


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    build_run(tmp_path / "archive")
    return tmp_path / "archive"


def new_run(archive_dir: Path, name: str = "new", grid: Grid | None = None) -> RunArchive:
    return RunArchive.create(archive_dir / name, stored_config(name), grid=grid or small_grid())


def seed(
    archive_dir: Path,
    specs: list[str],
    top: int | None = None,
    new: dict | None = None,
    grid: Grid | None = None,
    names: set[str] | None = None,
    name: str = "new",
) -> tuple[list[str], Path]:
    """Plan and apply imports into a fresh run `name`; returns the notes and the run's path."""
    plan = plan_imports(specs, top, archive_dir, new or SAME, lambda: names or set())
    with new_run(archive_dir, name, grid=grid) as archive:
        notes = apply_imports(archive, plan, pop=2, rng_seed=0)
    return notes, archive_dir / name


def records(path: Path) -> list[Evaluation]:
    with RunArchive.open(path) as archive:
        return list(archive.evaluations())


def split(got: list[Evaluation]) -> tuple[list[Evaluation], list[Evaluation]]:
    """The val-split records, and those of the sealed test split (the confirmed best's)."""
    return (
        [r for r in got if r.result.split == "val"],
        [r for r in got if r.result.split != "val"],
    )


def test_matching_settings_carry_evaluations_over_with_their_origin(archive_dir: Path) -> None:
    notes, path = seed(archive_dir, ["r1"])
    assert notes == [
        "seeding: 3 genome(s) from r1: evaluations carried over (same budget, data, "
        "device and held-out tokens)"
    ]
    got = records(path)
    # E (1 evaluation), D (3), A (1), best first; D's repeats are re-evaluations, not new members
    assert [(r.genome, r.operator, r.origin["id"]) for r in got] == [
        (sha(E), "import", "e000010"),
        (sha(D), "import", "e000007"),
        (sha(D), "reeval", "e000008"),
        (sha(D), "reeval", "e000009"),
        (sha(A), "import", "e000004"),
    ]
    assert [r.id for r in got] == [f"e{i:06d}" for i in range(1, 6)]  # new ids
    assert all(r.status == "ok" and r.origin["run"] == "r1" for r in got)
    assert [r.result.val_bpb for r in got] == [1.60, 1.70, 1.72, 1.71, 1.90]
    assert [r.generation for r in got] == [0, 0, 0, 0, 1]  # pop 2: the third member is gen 1
    assert got[0].idea == "imported from r1:e000010: narrower MLP"
    assert (path / "logs" / "e000002.log").read_text().startswith("log of e000007")
    with RunArchive.open(path) as archive:
        elites = {e.genome: e for e in archive.elites()}
    assert set(elites) == {sha(E), sha(D), sha(A)}
    assert (elites[sha(D)].n, elites[sha(D)].mean) == (3, pytest.approx(1.71))


def test_lineage_of_an_import_leads_back_into_the_source_run(archive_dir: Path) -> None:
    _, path = seed(archive_dir, ["r1"])
    steps = as_json(archive_dir, "lineage", "new", "e000002")
    assert [(s["run"], s["id"]) for s in steps] == [
        ("r1", "e000001"),
        ("r1", "e000004"),
        ("r1", "e000006"),
        ("new", "e000002"),
    ]
    assert steps[-1]["origin"]["id"] == "e000007" and steps[-1]["delta"] == pytest.approx(-0.09)
    show = as_json(archive_dir, "show", "new")
    assert show[0]["origin"] == {
        "run": "r1",
        "path": str((archive_dir / "r1").resolve()),
        "id": "e000010",
        "genome": sha(E),
    }


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("budget", 300.0, "training budget 2.0 ≠ 300.0"),
        ("dataset_fingerprint", "ffffffffffffffff", "dataset 0123456789abcdef ≠ ffffffffffffffff"),
        ("device", "cuda", "device cpu ≠ cuda"),
        ("eval_tokens", 65536, "held-out tokens 4096 ≠ 65536"),
    ],
)
def test_other_settings_queue_re_evaluations(
    archive_dir: Path, key: str, value: object, says: str
) -> None:
    notes, path = seed(archive_dir, ["r1"], new={**SAME, key: value})
    assert (
        notes[0].startswith(
            "seeding: 3 genome(s) from r1 will be re-evaluated here before their scores count"
        )
        and says in notes[0]
    )
    assert records(path) == []  # no score counts before it is measured here
    tasks = PendingTasks(path).all()
    assert [(t.kind, t.genome, t.operator, t.meta["origin"]["id"]) for t in tasks] == [
        ("import", sha(E), "import", "e000010"),
        ("import", sha(D), "import", "e000007"),
        ("import", sha(A), "import", "e000004"),
    ]
    assert [t.gen for t in tasks] == [0, 0, 1]
    with RunArchive.open(path) as archive:
        assert archive.genome_source(tasks[0].genome) == E


def test_another_gpu_model_queues_re_evaluations(tmp_path: Path) -> None:
    cuda = {**FINGERPRINT, "device": "cuda"}
    with RunArchive.create(
        tmp_path / "gpu", stored_config("gpu", cuda), grid=small_grid()
    ) as archive:
        archive.add_evaluation(ok(1.5, 10**5, device="NVIDIA A100-SXM4-80GB"), S0, generation=0)
    new = {**SAME, "device": "cuda"}
    notes, _ = seed(tmp_path, ["gpu"], new=new, names={"NVIDIA H100 80GB HBM3"}, name="h100")
    assert "device NVIDIA A100-SXM4-80GB ≠ NVIDIA H100 80GB HBM3" in notes[0]
    notes, _ = seed(tmp_path, ["gpu"], new=new, names={"NVIDIA A100-SXM4-80GB"}, name="a100")
    assert "carried over" in notes[0]


def test_elites_are_re_binned_into_the_new_grid(archive_dir: Path) -> None:
    grid = Grid([Descriptor("model_size", 5, 8, 3), Descriptor("tokens", 5, 7, 2)])
    notes, path = seed(archive_dir, ["r1"], grid=grid)
    assert any("re-binned" in n and "tokens [5, 7) x2" in n for n in notes)
    for r in records(path):
        source = D if r.genome == sha(D) else (E if r.genome == sha(E) else A)
        expected = grid.describe(r.result, source)
        assert r.descriptors == expected and r.cell == list(grid.cell_of(expected))
    with RunArchive.open(path) as archive:
        assert {e.genome: e.cell for e in archive.elites()} == {
            sha(A): (0, 1),
            sha(D): (1, 1),
            sha(E): (2, 1),
        }


def test_imports_that_land_in_one_cell_compete_for_it(archive_dir: Path) -> None:
    _, path = seed(archive_dir, ["r1"], grid=Grid([Descriptor("code_size", 50, 600, 1)]))
    with RunArchive.open(path) as archive:
        assert [e.genome for e in archive.elites()] == [sha(E)]


def test_seed_top_chosen_ids_and_merged_archives(archive_dir: Path) -> None:
    plan = plan_imports(["r1"], 1, archive_dir, SAME)
    assert [i.genome for i, _ in plan.imports] == [sha(E)]
    plan = plan_imports(["r1:e000007,e000004"], None, archive_dir, SAME)
    assert [(i.genome, i.origin_id) for i, _ in plan.imports] == [
        (sha(D), "e000007"),
        (sha(A), "e000004"),
    ]
    build_run(archive_dir, "r2")  # the same genomes again: merged, each imported once
    build_run(archive_dir, "r3", history=[(S0, 1.95, 10**5, 0, None, "seed", "seed genome")])
    plan = plan_imports(["r1", str(archive_dir / "r2"), "r3"], 2, archive_dir, SAME)
    assert [(i.run, i.genome) for i, _ in plan.imports] == [
        ("r1", sha(E)),
        ("r1", sha(D)),
        ("r3", sha(S0)),
    ]
    assert plan.stored()[0] == {
        "run": "r1",
        "path": str((archive_dir / "r1").resolve()),
        "id": "e000010",
        "genome": sha(E),
        "mode": "carried",
    }


def test_bad_seed_sources_are_user_errors(archive_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no run 'nope'"):
        plan_imports(["nope"], None, archive_dir, SAME)
    with pytest.raises(UserError, match="no evaluation e000099 in run r1"):
        plan_imports(["r1:e000099"], None, archive_dir, SAME)
    with pytest.raises(UserError, match="--seed-top without --seed-from"):
        plan_imports([], 3, archive_dir, SAME)
    RunArchive.create(archive_dir / "empty", stored_config("empty"), grid=small_grid()).close()
    with pytest.raises(UserError, match="run empty has no elites to seed from"):
        plan_imports(["empty"], None, archive_dir, SAME)


def test_seed_specs_and_the_default_seed() -> None:
    assert parse_spec("r1") == ("r1", [])
    assert parse_spec("old/runs/r1:e000012,abcdef12") == ("old/runs/r1", ["e000012", "abcdef12"])
    assert parse_spec("/data/run:2") == ("/data/run:2", [])
    assert (
        without_default_seed(None, {"seed_from": ("r1",), "seed_genomes": ()})["seed_genomes"] == []
    )
    kept = {"seed_from": ("r1",), "seed_genomes": ("mine.py",)}
    assert without_default_seed(None, kept) == kept


def test_an_autoresearch_train_py_gets_told_what_to_change(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, "
        "make_dataloader, evaluate_bpb\n\nprint('val_bpb:', evaluate_bpb(None))\n"
    )
    with pytest.raises(UserError) as caught:
        read_seed(str(script))
    message = caught.value.message()
    assert "autoresearch-style" in message
    for hint in (
        "from evolve.harness import session",
        "run.batches(B, T)",
        "run.time_left()",
        "run.submit(model, seq_len=T)",
    ):
        assert hint in message, hint
    assert read_seed(str(Path(__file__).parents[1] / "train.py"))  # the harness's own seed passes


# --- end to end: `evolve start --seed-from` -------------------------------------------------------


def start(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """One generation, no confirmation re-evaluations: the imports are the whole run."""
    (workspace / "run.toml").write_text("confirm = 1\n")
    command = [
        sys.executable,
        "-m",
        "evolve.cli",
        "start",
        "--generations",
        "1",
        "--eval-tokens",
        "4096",
        "--device",
        "cpu",
        "--config",
        "run.toml",
        *args,
    ]
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source run r1 measured (so its records say) on this data, device and budget."""
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    dataset = prepare("builtin")
    fingerprint = {**FINGERPRINT, "dataset_fingerprint": dataset.fingerprint}
    build_run(tmp_path / "archive", fingerprint=fingerprint)
    return tmp_path


def test_start_carries_over_matching_elites(workspace: Path) -> None:
    done = start(
        workspace,
        "--seed-from",
        "r1",
        "--seed-top",
        "2",
        "--pop",
        "2",
        "--budget",
        "2",
        "--name",
        "b",
    )
    assert done.returncode == 0, done.stderr
    assert "2 genome(s) from r1: evaluations carried over" in done.stderr
    got = records(workspace / "archive" / "b")
    carried, tests = split(got)
    assert [r.origin["id"] for r in carried] == ["e000010", "e000007", "e000008", "e000009"]
    assert [r.genome for r in tests] == [sha(E)]  # the confirmed best (confirm = 1), once
    runs = {r["name"]: r for r in as_json(workspace / "archive", "runs")}
    assert runs["b"]["status"] == "finished" and runs["b"]["best"]["mean"] == pytest.approx(1.60)
    with RunArchive.open(workspace / "archive" / "b") as archive:
        assert archive.config["seeds"] == [] and len(archive.config["imports"]) == 2


def test_start_re_evaluates_elites_measured_with_another_budget(workspace: Path) -> None:
    done = start(
        workspace, "--seed-from", "r1:e000007", "--pop", "1", "--budget", "1.5", "--name", "c"
    )  # one real evaluation, ~5 s
    assert done.returncode == 0, done.stderr
    assert (
        "will be re-evaluated here before their scores count: training budget 2.0 ≠ 1.5"
        in done.stderr
    )
    [record], [test] = split(records(workspace / "archive" / "c"))
    assert (test.genome, test.operator) == (sha(D), "test")  # confirm = 1: the best at once
    assert (record.operator, record.origin["id"], record.genome) == ("import", "e000007", sha(D))
    assert record.status == "ok" and record.result.budget == 1.5, json.dumps(record.to_dict())[:500]
    assert record.result.val_bpb != 1.70 and record.cell is not None  # measured here
    assert PendingTasks(workspace / "archive" / "c").all() == []
    steps = as_json(workspace / "archive", "lineage", "c", "e000001")
    assert [(s["run"], s["id"]) for s in steps][-2:] == [("r1", "e000006"), ("c", "e000001")]
