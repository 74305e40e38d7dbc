"""Learning-curve pruning: curve points are hostile input, they can only stop the genome that
sent them, and a pruned child is a failed child (out of the map, not retried).

Real parts: the runner's own parsing path, real sandboxed genomes trained under the
runner, and a real `evolve start --prune on`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.config import RunConfig, build_config
from evolve.engine.pruning import Pruning
from evolve.errors import UserError
from evolve.operators.llm.context import _Reader, parent_curve
from evolve.record import EvalResult, Evaluation, Status
from evolve.runner import channel
from evolve.runner.curve import MAX_POINTS, Curve, PrunePlan, brief, loss_at
from evolve.runner.outcome import Outcome
from evolve.runner.run import _record, _take_messages
from evolve.testkit.grids import small_grid
from evolve.testkit.tiny import tiny_genome
from tests.test_result_channel import SANDBOX, _Data

LOG_LINE = '            run.log(step=step, loss=value, lr=optimizer.param_groups[0]["lr"])\n'


def _curve(step: int, loss: object) -> bytes:
    return json.dumps({"event": "curve", "step": step, "loss": loss}).encode() + b"\n"


def _feed(*lines: bytes) -> Outcome:
    outcome = Outcome()
    _take_messages(SANDBOX + b"".join(lines), outcome, time.monotonic())
    return outcome


# --- the channel ------------------------------------------------------------------------------


def test_curve_points_are_stamped_with_the_runners_clock():
    outcome = Outcome()
    start = time.monotonic()
    _take_messages(SANDBOX + _curve(10, 5.5), outcome, start)
    time.sleep(0.05)
    _take_messages(_curve(5, 4.0) + _curve(20, 3.25), outcome, start)  # steps may go back
    assert outcome.protocol_error is None
    times = [p[0] for p in outcome.curve.points]
    assert [p[1:] for p in outcome.curve.points] == [(10, 5.5), (5, 4.0), (20, 3.25)]
    assert times == sorted(times) and times[1] - times[0] >= 0.04  # arrival, not the genome's word
    assert outcome.messages == 1 and outcome.curve_messages == 3  # counted apart from the 64


@pytest.mark.parametrize(
    "line",
    ids=[
        "nan",
        "infinity",
        "1e999",
        "huge",
        "negative",
        "string",
        "float-step",
        "no-step",
        "own-time",
        "own-seconds",
    ],
    argvalues=[
        b'{"event": "curve", "step": 1, "loss": NaN}\n',
        b'{"event": "curve", "step": 1, "loss": Infinity}\n',
        b'{"event": "curve", "step": 1, "loss": 1e999}\n',
        b'{"event": "curve", "step": 1, "loss": 1e7}\n',
        b'{"event": "curve", "step": 1, "loss": -0.5}\n',
        b'{"event": "curve", "step": 1, "loss": "2.0"}\n',
        b'{"event": "curve", "step": 1.5, "loss": 2.0}\n',
        b'{"event": "curve", "loss": 2.0}\n',
        b'{"event": "curve", "step": 1, "loss": 2.0, "t": -100}\n',  # time travel: the genome's clock
        b'{"event": "curve", "step": 1, "loss": 2.0, "seconds": 0.0}\n',
    ],
)
def test_hostile_curve_points_make_the_evaluation_invalid(line):
    outcome = _feed(_curve(1, 3.0), line)
    assert outcome.protocol_error  # the runner kills it: `invalid`, "tampered with"
    assert len(outcome.curve.points) == 1


def test_a_curve_flood_is_invalid_and_what_is_kept_stays_thin():
    outcome = _feed(*[_curve(i, 2.0) for i in range(channel.MAX_CURVE_MESSAGES)])
    assert outcome.protocol_error is None
    assert len(outcome.curve.points) < MAX_POINTS
    steps = [p[1] for p in outcome.curve.points]
    assert steps[0] == 0 and steps[-1] > 0.9 * channel.MAX_CURVE_MESSAGES  # spread over the run
    _take_messages(_curve(1, 2.0), outcome, time.monotonic())
    assert "more than" in outcome.protocol_error


def test_a_curve_before_the_sandbox_is_invalid():
    outcome = Outcome()
    _take_messages(_curve(1, 2.0), outcome, time.monotonic())
    assert outcome.protocol_error and "before the sandbox" in outcome.protocol_error


def test_the_record_keeps_the_curve_as_strict_json():
    outcome = _feed(_curve(1, 5.0), _curve(2, 4.0))
    record = _record(outcome, "crashed", "x", {}, _settings(), _Data(), Path("/nonexistent"), [])
    text = record.to_json()
    stored = json.loads(text, parse_constant=pytest.fail)["curve"]
    assert [p[1:] for p in stored] == [[1, 5.0], [2, 4.0]]
    assert "s" in brief(stored, 1.0) or brief(stored, 1.0) == ""


def _settings():
    from evolve.runner import RunSettings

    return RunSettings(budget=1.0, mem_limit_bytes=None)


# --- the verdict --------------------------------------------------------------------------------


def _plan(**kw) -> PrunePlan:
    return PrunePlan(
        **{
            "mode": "on",
            "checkpoints": [1.0, 2.0],
            "reference": [4.0, 3.0],
            "margin": [0.2, 0.2],
            "window": 0.5,
            "source": "test",
            **kw,
        }
    )


def test_only_a_child_clearly_behind_is_judged_behind():
    curve = Curve()
    for i in range(1, 11):
        curve.add(i / 10, i, 4.1)  # within the margin at 1 s
    plan = _plan()
    assert plan.judge(curve.points, 1.05) is None
    for i in range(11, 31):
        curve.add(i / 10, i, 3.5)  # behind at 2 s: 3.5 > 3.0 + 0.2
    verdict = plan.judge(curve.points, 2.1)
    assert verdict and verdict["checkpoint"] == 1 and verdict["loss"] == 3.5
    assert plan.judge(curve.points, 9.0) is None  # each checkpoint is judged once


def test_silence_is_never_pruned():
    assert _plan().judge([], 10.0) is None
    assert _plan().judge([(5.0, 1, 99.0)], 10.0) is None  # nothing up to any checkpoint
    assert loss_at([(0.9, 5.0), (1.0, 7.0), (1.1, 1.0)], 1.0, 0.5) == 6.0  # never a later point


class _Records:
    """Plain stored records behind the one archive call `Pruning` makes (evaluations_of)."""

    def __init__(self, records: list[Evaluation], sources: dict[str, str] | None = None) -> None:
        self.records, self.sources = records, sources or {}

    def evaluations_of(self, genome: str) -> list[Evaluation]:
        return [r for r in self.records if r.genome == genome]

    def genome_source(self, genome: str) -> str:
        return self.sources[genome]


def _stored(genome: str, bpb: float, losses: list[float]) -> Evaluation:
    curve = [[0.5 * (i + 1), i, v] for i, v in enumerate(losses)]  # a 5 s budget
    return Evaluation.from_dict(
        {
            "genome": genome,
            "status": "ok",
            "result": {"val_bpb": bpb, "curve": curve, "split": "val", "hardware": {}},
        }
    )


def test_a_parent_whose_curve_claims_more_than_its_score_is_no_reference():
    """A genome that under-reports its loss would make every honest child of it look behind:
    its curve must agree, relative to the seed's, with what the evaluator measured."""
    seed = [5.0, 4.0, 3.5, 3.2, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5]
    records = [
        _stored("seed", 3.6, seed),
        _stored("seed", 3.7, [v + 0.1 for v in seed]),
        _stored("honest", 3.45, [0.95 * v for v in seed]),
        _stored("liar", 3.7, [0.01] * 10),
        _stored("silent", 3.5, []),
    ]
    pruning = Pruning(RunConfig(budget=5.0, prune="on"), _Records(records), ["seed"])
    honest = pruning.plan(["honest"])
    assert honest is not None and honest.reference[0] == pytest.approx(0.95 * 4.5)
    assert honest.margin[0] == pytest.approx(3.0 * 0.1 / 2**0.5)  # z x the seeds' spread
    assert pruning.plan(["liar"]) is None and pruning.plan(["silent"]) is None
    assert pruning.plan(["honest", "liar"]) is None
    assert Pruning(RunConfig(budget=5.0), _Records(records), ["seed"]).plan(["honest"]) is None


def test_a_child_that_changes_the_models_shape_is_never_pruned():
    """A wider or deeper child learns more slowly at first and usually lands in another cell,
    where it enters the archive whatever its parent scored: its parent is no yardstick."""
    seed = [5.0, 4.0, 3.5, 3.2, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5]
    records = [_stored("seed", 3.6, seed), _stored("seed", 3.7, [v + 0.1 for v in seed])]
    parent = "N_EMBD = 64\nN_LAYER = 2\nLEARNING_RATE = 3e-3\n"
    sources = {
        "seed": parent,
        "faster": parent.replace("3e-3", "6e-3"),
        "wider": parent.replace("64", "128"),
        "broken": "N_EMBD = (\n",
    }
    pruning = Pruning(RunConfig(budget=5.0, prune="on"), _Records(records, sources), ["seed"])
    assert pruning.plan(["seed"], "faster") is not None
    assert pruning.plan(["seed"], "wider") is None and pruning.plan(["seed"], "broken") is None
    everything = RunConfig(budget=5.0, prune="on", prune_shape=[])
    assert Pruning(everything, _Records(records, sources), ["seed"]).plan(["seed"], "wider")


def test_the_cell_reference_is_the_incumbent_of_the_childs_predicted_cell(tmp_path):
    """prune_reference = "cell": a child is held to the elite it must beat to enter the
    archive, the one of its own shape whose cell its own source (line count) also points to;
    a shape no elite has, or a child bound for another (empty) cell, is never pruned."""
    seed_curve = [5.0, 4.0, 3.5, 3.2, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5]
    base = "N_EMBD = 64\nN_LAYER = 2\nLEARNING_RATE = 3e-3\n"
    wide = base.replace("64", "128")
    sources = {
        "seed": base,
        "wide": wide,
        "wide_faster": wide.replace("3e-3", "6e-3"),  # the shape of an elite: held to it
        "wider": base.replace("64", "256"),  # a shape no elite has
        "wide_longer": wide + "".join(f"x{i} = {i}\n" for i in range(200)),  # another cell
    }
    config = RunConfig(budget=5.0, prune="on", prune_reference="cell")
    with RunArchive.create(tmp_path / "r", config.to_dict(), grid=small_grid()) as archive:
        hashes = {name: archive.put_genome(source) for name, source in sources.items()}
        for bpb, params, losses in [
            (3.6, 30_000, seed_curve),
            (3.7, 30_000, [v + 0.1 for v in seed_curve]),
        ]:
            archive.add_evaluation(_result(bpb, params, losses), base, generation=0)
        wide_losses = [0.9 * v for v in seed_curve]
        archive.add_evaluation(_result(3.3, 100_000, wide_losses), wide, generation=1)
        pruning = Pruning(config, archive, [hashes["seed"]])
        plan = pruning.plan([hashes["seed"]], hashes["wide_faster"])
        assert plan is not None and plan.source.startswith(f"incumbent {hashes['wide'][:8]}")
        assert plan.reference[0] == pytest.approx(0.9 * 4.5)  # the wide elite's curve at 1 s
        assert pruning.plan([hashes["seed"]], hashes["wider"]) is None
        assert pruning.plan([hashes["wide"]], hashes["wide_longer"]) is None
        by_parent = Pruning(RunConfig(budget=5.0, prune="on"), archive, [hashes["seed"]])
        assert by_parent.plan([hashes["seed"]], hashes["wide_faster"]) is None  # reshaped


def _result(bpb: float, params: int, losses: list[float]) -> EvalResult:
    curve = [[0.5 * (i + 1), i, v] for i, v in enumerate(losses)]  # a 5 s budget
    return EvalResult(status="ok", val_bpb=bpb, params=params, curve=curve, budget=5.0)


# --- real genomes under the runner --------------------------------------------------------------

BUDGET = 3.0


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """A real curve of the tiny seed genome, as the parent a child is held to."""
    from evolve.runner import RunSettings, run_genome

    base = tmp_path_factory.mktemp("ref")
    settings = RunSettings(
        budget=BUDGET,
        grace=10.0,
        threads=1,
        eval_tokens=2048,
        mem_limit_bytes=2 << 30,
        max_procs=64,
    )
    result = run_genome(tiny_genome(LOG_EVERY=2), dataset, settings, base / "w", base / "l.log")
    assert result.status == "ok" and len(result.curve) > 10, result.reason
    points = [(p[0], p[2]) for p in result.curve]
    checkpoints = [0.3 * BUDGET, 0.5 * BUDGET]
    values = [loss_at(points, c, 0.1 * BUDGET) for c in checkpoints]
    return result, PrunePlan(
        mode="on",
        checkpoints=checkpoints,
        reference=values,
        margin=[0.15 * v for v in values],
        window=0.1 * BUDGET,
        source="the seed",
    )


def test_a_child_that_trains_badly_is_pruned_and_a_good_one_is_not(evaluate, reference):
    parent, plan = reference
    bad = evaluate(
        tiny_genome(LOG_EVERY=2, LEARNING_RATE=1e-6), budget=BUDGET, grace=10.0, prune=plan
    )
    assert bad.result.status == "pruned", (bad.result.reason, bad.log[-1500:])
    assert bad.result.reason.startswith("pruned at ") and "the seed" in bad.result.reason
    assert bad.result.val_bpb is None and bad.result.training_seconds < 0.8 * BUDGET
    assert bad.result.prune["mode"] == "on" and bad.result.curve
    good = evaluate(tiny_genome(LOG_EVERY=2), budget=BUDGET, grace=10.0, prune=plan)
    assert good.result.status == "ok" and good.result.prune is None, good.result.prune
    assert not Status("pruned").infrastructure  # never retried


def test_a_lying_genome_is_not_pruned_and_is_scored_honestly(evaluate, reference):
    parent, plan = reference
    source = tiny_genome(LOG_EVERY=2, LEARNING_RATE=1e-6)
    assert LOG_LINE in source
    liar = evaluate(
        source.replace(LOG_LINE, LOG_LINE.replace("loss=value", "loss=0.01")),
        budget=BUDGET,
        grace=10.0,
        prune=plan,
    )
    assert liar.result.status == "ok", (liar.result.reason, liar.log[-1500:])
    assert liar.result.prune is None and all(p[2] == 0.01 for p in liar.result.curve)
    assert liar.result.val_bpb > parent.val_bpb + 0.3  # the evaluator's score, not the curve's


def test_shadow_mode_records_the_verdict_and_stops_nothing(evaluate, reference):
    _, plan = reference
    plan = PrunePlan(**{**plan.__dict__, "mode": "shadow", "decided": set()})
    run = evaluate(
        tiny_genome(LOG_EVERY=2, LEARNING_RATE=1e-6), budget=BUDGET, grace=10.0, prune=plan
    )
    assert run.result.status == "ok" and run.result.val_bpb is not None
    assert run.result.prune["mode"] == "shadow" and run.result.prune["stopped"] < BUDGET


# --- the engine: pruned children are failed children ----------------------------------------------


def _honest_only_as_seed() -> str:
    """The tiny seed, reporting its real loss only while its constants are the seed's own; any
    mutated child reports a loss of 50, far behind, so the engine must prune it."""
    source = tiny_genome(LOG_EVERY=2)
    constants = re.findall(r"^([A-Z][A-Z0-9_]*) = ([^#\n]+)", source, flags=re.M)
    table = "seed_constants = {" + ", ".join(f"{k!r}: {v.strip()}" for k, v in constants) + "}\n"
    source = source.replace("def lr_scale(", table + "\n\ndef lr_scale(")
    honest = "value if all(globals()[k] == v for k, v in seed_constants.items()) else 50.0"
    return source.replace(LOG_LINE, LOG_LINE.replace("loss=value", f"loss={honest}"))


def test_pruned_children_stay_out_of_the_map_and_are_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seed.py").write_text(_honest_only_as_seed())
    (tmp_path / "run.toml").write_text(
        "noise_repeats = 2\nconfirm = 1\nprune_checkpoints = [0.3]\n"
        "prune_shape = []\n[operators]\nhyper_mutate = 1.0\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "evolve.cli",
            "start",
            "--pop",
            "2",
            "--generations",
            "2",
            "--budget",
            "2",
            "--eval-tokens",
            "2048",
            "--devices",
            "cpu:1",
            "--threads",
            "1",
            "--prune",
            "on",
            "--seed-genome",
            "seed.py",
            "--config",
            "run.toml",
            "--name",
            "p",
            "--archive-dir",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    with RunArchive.open(tmp_path / "runs" / "p") as archive:
        records = list(archive.evaluations())
        elites = archive.elites()
        pending = list((tmp_path / "runs" / "p" / "pending").glob("*"))
    seeds = [r for r in records if r.operator == "seed"]
    children = [r for r in records if r.operator not in ("seed", "reeval", "test")]
    assert all(r.status == "ok" and r.result.curve for r in seeds)
    assert len(children) == 2 and all(r.status == "pruned" for r in children), [
        (r.status, r.result.reason) for r in children
    ]
    for child in children:
        assert child.decision is None and "pruned at 0.6 s" in child.result.reason
        assert child.result.training_seconds < 1.5
    assert {e.genome for e in elites} == {seeds[0].genome}  # the map holds the seed only
    assert len({r.id for r in records}) == len(records) and not pending  # none retried
    cli = [sys.executable, "-m", "evolve.cli"]
    where = ["--archive-dir", str(tmp_path / "runs")]
    shown = subprocess.run([*cli, "show", "p", *where], capture_output=True, text=True, timeout=60)
    assert "pruning: 2 child(ren) pruned" in shown.stdout and "training curve" in shown.stdout
    log = subprocess.run(
        [*cli, "log", "p", children[0].id, *where], capture_output=True, text=True, timeout=60
    )
    assert log.returncode == 0 and "training curve (reported by the genome" in log.stdout
    with RunArchive.open(tmp_path / "runs" / "p") as archive:  # the LLM sees the parent's curve
        brief = parent_curve(_Reader(archive), seeds[0].genome)
    assert re.fullmatch(r"(\d+\.\ds \d+\.\d{3}(, )?)+", brief), brief


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, word",
    [
        ({"prune": "maybe"}, "prune mode"),
        ({"prune_checkpoints": [0.5, 0.2]}, "prune_checkpoints"),
        ({"prune_checkpoints": [0.0, 0.5]}, "prune_checkpoints"),
        ({"prune_checkpoints": [1.0]}, "prune_checkpoints"),
        ({"prune_checkpoints": []}, "prune_checkpoints"),
        ({"prune_checkpoints": [0.1] * 9}, "prune_checkpoints"),
        ({"prune_checkpoints": "0.2"}, "prune_checkpoints"),
        ({"prune_z": -1.0}, "prune_z"),
        ({"prune_min_margin": float("nan")}, "prune_min_margin"),
        ({"prune_default_margin": True}, "prune_default_margin"),
        ({"prune_shape": "N_EMBD"}, "prune_shape"),
        ({"prune_shape": ["N EMBD"]}, "prune_shape"),
        ({"prune_reference": "incumbent"}, "prune_reference"),
    ],
)
def test_bad_prune_settings_are_clear_errors(data, word):
    with pytest.raises(UserError) as caught:
        RunConfig.from_dict(data).validate()
    assert word in str(caught.value.what)


def test_prune_defaults_off_and_the_flag_sets_it(tmp_path):
    assert RunConfig().validate().prune == "off"
    assert build_config(None, {"prune": "shadow"}).prune == "shadow"
    config = tmp_path / "c.toml"
    config.write_text('prune = "on"\nprune_checkpoints = [0.1, 0.25]\n')
    built = build_config(config, {})
    assert built.prune == "on" and built.prune_checkpoints == [0.1, 0.25]
    done = subprocess.run(
        [sys.executable, "-m", "evolve.cli", "start", "--prune", "maybe"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "maybe" in done.stderr
