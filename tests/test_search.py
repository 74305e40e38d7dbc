"""Search strategies, racing, per-genome noise and the surrogate executor.

Runs go through the real engine and a real archive; evaluations come from a surrogate
with a known response surface, so they are instant and deterministic.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from evolve.archive import EliteRule, ElitesMap, GenomeStats, RunArchive
from evolve.browse.curve import coverage_line, evals_to_reach, search_curve
from evolve.config import RunConfig
from evolve.engine import start
from evolve.engine.strategy import GreedyStrategy
from evolve.errors import UserError
from evolve.executors.surrogate import Surrogate, SurrogateExecutor, fit
from evolve.record import Evaluation
from evolve.runner import RunSettings
from evolve.surface import constant_values, features
from evolve.testkit.tiny import tiny_genome

SEED = tiny_genome()
LOG_SIGMA = math.log(0.05)


def known_surface(noise: float = 0.05, p_fail: float = 0.0) -> Surrogate:
    """bpb = 4 - 0.3 x_emb + 0.5 x_lr^2 (x: log ratio to the seed), noise std `noise`."""
    logit = math.log(p_fail / (1 - p_fail)) if p_fail else -30.0
    return Surrogate(
        reference=constant_values(SEED),
        names=["LEARNING_RATE", "N_EMBD"],
        low=[-2, -2],
        high=[2, 2],
        bpb=[4.0, 0.0, -0.3, 0.5, 0.0],
        noise=[math.log(noise), 0, 0, 0, 0],
        fail=[logit, 0, 0, 0, 0],
        measures={"params": [math.log(3e4), 0, 2, 0, 0], "seq_len": [math.log(32), 0, 0, 0, 0]},
        statuses={"crashed": 1},
        budget=2.0,
        wall_seconds=3.0,
    )


def run(tmp_path: Path, monkeypatch, surrogate: Surrogate, **settings) -> Path:
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seed.py").write_text(settings.pop("seed_source", SEED))
    (tmp_path / "data.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4000)
    config = RunConfig.from_dict(
        {
            "name": settings.pop("name", "r"),
            "archive_dir": str(tmp_path),
            "seed_genomes": [str(tmp_path / "seed.py")],
            "pop": 4,
            "data": str(tmp_path / "data.txt"),
            "budget": 2.0,
            "max_evals": 40,
            **settings,
        }
    ).validate()

    def build(cfg, dataset):
        return SurrogateExecutor(surrogate, 2), RunSettings(budget=2.0, device="cpu")

    prepared = start(config, build)
    prepared.run_to_end()
    return tmp_path / config.name


def records(path: Path) -> list[Evaluation]:
    with RunArchive.open(path) as archive:
        return sorted(archive.evaluations(), key=lambda r: r.seq)


# --- noise: each genome's own spread, shrunk toward the run's ---------------------------


def stats(values: list[float], name: str = "g") -> GenomeStats:
    s = GenomeStats(name, (0,))
    for i, v in enumerate(values):
        s.push(v, f"e{i}")
    return s


def test_a_noisy_genome_needs_a_wider_margin_than_the_seed_noise_gives() -> None:
    pooled = EliteRule(noise_std=0.001, z=2.0)
    own = EliteRule(noise_std=0.001, z=2.0, prior_weight=2.0)
    incumbent = stats([4.000, 4.001, 3.999])
    lucky = stats([3.90, 3.96, 3.93])  # spreads 0.03: its lower mean may be luck
    assert pooled.margin_between(lucky, incumbent) == pooled.margin(3, 3)
    assert own.margin_between(lucky, incumbent) > 10 * pooled.margin(3, 3)
    assert own.genome_variance(stats([4.0])) == pytest.approx(1e-6)  # one evaluation: the prior
    many = stats([4 + 0.03 * (-1) ** i for i in range(40)])
    assert own.genome_variance(many) == pytest.approx(0.03**2 * 39 / 41 * 40 / 39, rel=0.1)


def test_close_call_is_a_lower_mean_inside_the_margin() -> None:
    emap = ElitesMap(1, EliteRule(noise_std=0.05, z=2.0))
    emap.add("inc", (0,), 4.00, "e1")
    emap.add("near", (0,), 3.98, "e2")  # lower, but by less than 2 * 0.05 * sqrt(2)
    emap.add("worse", (0,), 4.10, "e3")
    assert emap.elite_at((0,)).genome == "inc"
    assert emap.close_call("near") and not emap.close_call("worse")
    assert not emap.close_call("inc") and not emap.close_call("unknown")


# --- strategies through the engine ----------------------------------------------------


def test_greedy_children_come_from_the_champion_of_the_time(tmp_path, monkeypatch) -> None:
    path = run(tmp_path, monkeypatch, known_surface(), strategy="greedy", rng_seed=1, max_evals=30)
    with RunArchive.open(path) as archive:
        replay = GreedyStrategy.__new__(GreedyStrategy)
        replay.lineage = ElitesMap(1, archive.rule)
        champions = set()
        for record in records(path):
            if record.operator not in ("seed", "reeval", "race", "test"):
                assert record.parents[0] in champions, record.idea
            replay.observe(record)
            if replay.champion() is not None:
                champions.add(replay.champion().genome)
    assert len(champions) >= 2  # the lineage moved


def best_at_proposal(path: Path, lag: int = 12) -> list[bool]:
    """For each child: was its first parent the archive's lowest-mean elite shortly before
    the child was stored? (the elite map replayed in storage order; proposals run ahead of
    the slots, so any of the last `lag` states counts)."""
    rows = records(path)
    with RunArchive.open(path) as archive:
        emap = ElitesMap(archive.grid.total_cells, archive.rule)
    history: list[str] = []  # the best after each stored record
    verdicts = []
    for row in rows:
        if row.operator in ("hyper_mutate", "hyper_crossover"):
            verdicts.append(row.parents[0] in history[-lag:])
        if row.val_bpb is not None and row.cell is not None and not row.sealed:
            emap.add(row.genome, tuple(row.cell), row.val_bpb, row.id)
        if emap.elites():
            history.append(min(emap.elites(), key=lambda e: e.mean).genome)
    return verdicts


def test_exploit_1_breeds_every_child_from_the_best_elite(tmp_path, monkeypatch) -> None:
    surface = known_surface(noise=0.1)
    inside = run(
        tmp_path,
        monkeypatch,
        surface,
        name="all",
        z=0,
        exploit=1.0,
        max_evals=60,
        selection="uniform",
    )
    verdicts = best_at_proposal(inside)
    assert len(verdicts) >= 30 and all(verdicts)  # the share overrides the method
    spread = run(
        tmp_path,
        monkeypatch,
        surface,
        name="none",
        z=0,
        exploit=0.0,
        max_evals=60,
        selection="uniform",
    )
    verdicts = best_at_proposal(spread)
    assert sum(verdicts) <= 0.8 * len(verdicts)  # without it, uniform: many other parents


def test_exploit_outside_0_1_is_a_user_error() -> None:
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(UserError, match="exploit"):
            RunConfig(exploit=bad).validate()


def test_random_children_all_come_from_the_seed(tmp_path, monkeypatch) -> None:
    path = run(tmp_path, monkeypatch, known_surface(), strategy="random")
    rows = records(path)
    seed = rows[0].genome
    children = [r for r in rows if r.operator in ("hyper_mutate", "hyper_crossover")]
    assert children and all(r.parents == [seed] for r in children)


def test_close_challengers_are_raced_and_the_races_are_bounded(tmp_path, monkeypatch) -> None:
    path = run(tmp_path, monkeypatch, known_surface(noise=0.2), race=3, max_evals=60)
    rows = records(path)
    races = [r for r in rows if r.operator == "race"]
    assert races, "a noise of 0.2 bpb leaves close calls"
    for genome in {r.genome for r in races}:  # the child and at most two races
        assert sum(r.genome == genome for r in races) <= 2
    val = [r for r in rows if r.result.split == "val"]
    assert 60 <= len(val) <= 62  # max_evals counts every val evaluation, races included


def test_no_racing_with_race_1(tmp_path, monkeypatch) -> None:
    path = run(tmp_path, monkeypatch, known_surface(noise=0.2), race=1)
    assert not [r for r in records(path) if r.operator == "race"]


def test_unknown_strategy_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown search strategy"):
        RunConfig(strategy="hill-climb").validate()


def test_search_curve_counts_every_val_evaluation(tmp_path, monkeypatch) -> None:
    surface = known_surface(p_fail=0.2)
    path = run(tmp_path, monkeypatch, surface, max_evals=30)
    with RunArchive.open(path) as archive:
        points = search_curve(archive, lambda g: surface.predict(archive.genome_source(g))["mean"])
    rows = [r for r in records(path) if r.result.split == "val"]
    assert len(points) == len(rows) and any(r.status == "crashed" for r in rows)
    assert points[2].best is not None  # the seed's three evaluations confirm it
    assert all(a.coverage <= b.coverage for a, b in zip(points, points[1:], strict=False))
    assert evals_to_reach(points, points[-1].best) <= len(points)
    assert evals_to_reach(points, 0.0) is None
    with RunArchive.open(path) as archive:
        line = coverage_line(archive)
        assert line.startswith("coverage by generation (cells filled): 0: ")
        last = max(archive.logbook(), key=lambda row: row["gen"])
        assert line.endswith(
            f"{last['gen']}: {last['coverage']:.1%} "
            f"({round(last['coverage'] * archive.grid.total_cells)})"
        )


# --- the surrogate ------------------------------------------------------------------------


def test_surrogate_fit_recovers_a_known_surface() -> None:
    truth = known_surface(noise=0.02, p_fail=0.0)
    rng = random.Random(0)
    samples = []
    for i in range(120):
        lr, emb = 3e-3 * math.exp(rng.uniform(-1, 1)), rng.choice([16, 32, 64])
        source = tiny_genome(LEARNING_RATE=float(f"{lr:.3g}"), N_EMBD=emb)
        failed = lr > 6e-3 and rng.random() < 0.8  # high rates crash
        result = truth.sample(source, i).to_dict()
        if failed:
            result.update(status="crashed", val_bpb=None)
        samples.append((source, result))
    model = fit(samples, SEED, lam=0.1)
    for lr, emb in ((3e-3, 32), (1.5e-3, 64), (5e-3, 16)):
        source = tiny_genome(LEARNING_RATE=lr, N_EMBD=emb)
        assert model.predict(source)["mean"] == pytest.approx(
            truth.predict(source)["mean"], abs=0.03
        )
    assert model.predict(SEED)["std"] == pytest.approx(0.02, rel=0.5)
    assert model.predict(tiny_genome(LEARNING_RATE=8e-3))["p_fail"] > 0.5
    assert model.predict(SEED)["p_fail"] < 0.1
    assert model.predict(tiny_genome(N_EMBD=64))["params"] == pytest.approx(1.2e5, rel=0.05)


def test_surrogate_samples_are_deterministic_and_round_trip(tmp_path) -> None:
    model = known_surface()
    model.save(tmp_path / "s.json")
    again = Surrogate.load(tmp_path / "s.json")
    a, b = model.sample(SEED, 7), again.sample(SEED, 7)
    assert a.val_bpb == b.val_bpb and a.params == b.params == 30000
    assert model.sample(SEED, 8).val_bpb != a.val_bpb
    far = tiny_genome(LEARNING_RATE=30.0)  # beyond the fitted range: clamped, not extrapolated
    assert np.allclose(features(far, model.reference, model.names), [math.log(1e4), 0.0])
    assert model.predict(far)["mean"] == pytest.approx(4.0 + 0.5 * 4)
