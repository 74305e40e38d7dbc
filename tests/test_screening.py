"""Pre-screening: the archive's own fit picks which of several cheap children is evaluated.

Runs go through the real engine and a real archive, with evaluations from a surrogate of
known surface (tests/test_search.py): bpb = 4 - 0.3 x_emb + 0.5 x_lr^2, so a larger
N_EMBD is better and the learning rate is best where it is.
"""

from __future__ import annotations

import random
import statistics

import pytest

from evolve.archive import RunArchive
from evolve.archive.pending import PendingTasks
from evolve.config import RunConfig
from evolve.engine.screening import MIN_GENOMES, Screen
from evolve.engine.strategy import make_strategy
from evolve.errors import UserError
from evolve.operators import Child, Parent, register_operator, unregister_operator
from evolve.testkit.tiny import set_constants
from tests.test_search import SEED, known_surface, records, run

CHILDREN = ("hyper_mutate", "hyper_crossover")


def true_means(path, surface) -> list[float]:
    """The surface's noise-free mean of each child, in the order the run stored them."""
    with RunArchive.open(path) as archive:
        return [
            surface.predict(archive.genome_source(r.genome))["mean"]
            for r in records(path)
            if r.operator in CHILDREN
        ]


def test_screened_children_are_better_than_children_drawn_blind(tmp_path, monkeypatch) -> None:
    surface = known_surface(noise=0.05)
    settings = {"z": 0, "max_evals": 80, "rng_seed": 3}
    blind = true_means(
        run(tmp_path, monkeypatch, surface, name="blind", screen=1, **settings), surface
    )
    screened = true_means(
        run(tmp_path, monkeypatch, surface, name="screened", screen=8, **settings), surface
    )
    # the first children come before the fit is trusted; after them, the fit leads
    later_blind, later_screened = blind[MIN_GENOMES + 8 :], screened[MIN_GENOMES + 8 :]
    assert len(later_blind) >= 30 and len(later_screened) >= 30
    # 5 seeds of this run gave 0.08 to 0.25 bpb between the two means (threads reorder a bit)
    assert statistics.mean(later_screened) < statistics.mean(later_blind) - 0.04


def test_the_fit_follows_the_measured_direction_and_a_resumed_run_keeps_it(
    tmp_path, monkeypatch
) -> None:
    path = run(tmp_path, monkeypatch, known_surface(noise=0.02), z=0, max_evals=40)
    with RunArchive.open(path) as archive:
        seeds = list(archive.config["seeds"])
        strategy = make_strategy("map-elites", archive, seeds, screen=4)  # as on resume
        screen = strategy.screen
        assert screen is not None and screen.draws == 4
        wider = [set_constants(SEED, N_EMBD=n) for n in (16, 32, 64, 128)]
        picked = screen.pick([Child(s, "hyper_mutate", [], "x") for s in wider])
        assert picked.source == wider[-1]  # the measured direction: wider is better
        assert screen.predict(wider[-1]) < screen.predict(wider[0])
        assert make_strategy("greedy", archive, seeds, screen=4).screen is None
        assert make_strategy("random", archive, seeds, screen=4).screen is None


HUGE = "10**64 * 10**64 * 10**64 * 10**64 * 10**64 * 10**64"  # an int no float can hold


def test_a_constant_no_float_can_hold_crashes_nothing(tmp_path, monkeypatch) -> None:
    """An LLM may write any literal; the operators and the screen read every genome's constants.
    A constant past the float range is no hyperparameter: left alone, never a crash."""
    seed = SEED + f"HUGE_CONSTANT = {HUGE}\n"
    path = run(tmp_path, monkeypatch, known_surface(), seed_source=seed, screen=8, max_evals=30)
    children = [r for r in records(path) if r.operator in CHILDREN]
    assert len(children) >= 12
    with RunArchive.open(path) as archive:
        assert all(HUGE in archive.genome_source(r.genome) for r in children)


def test_too_few_genomes_keep_the_first_child() -> None:
    screen = Screen(4, SEED, lambda genome: SEED)
    children = [Child(set_constants(SEED, N_EMBD=n), "hyper_mutate", [], "x") for n in (16, 64)]
    assert screen.predict(children[1].source) is None
    assert screen.pick(children) is children[0]


class NumberedLine:
    """A stand-in for an LLM operator (one call per child): appends a new numbered line."""

    arity = 1
    calls = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        NumberedLine.calls += 1
        line = f"\nextra_line_{NumberedLine.calls} = {NumberedLine.calls}\n"
        return Child(parents[0].source + line, self.name, [parents[0].id], "a line")


@pytest.fixture
def numbered():
    NumberedLine.calls = 0
    register_operator("numbered_line", NumberedLine)
    yield "numbered_line"
    unregister_operator("numbered_line")


def test_only_constant_editing_children_are_screened(tmp_path, monkeypatch, numbered) -> None:
    path = run(
        tmp_path,
        monkeypatch,
        known_surface(),
        z=0,
        screen=8,
        max_evals=50,
        operators={numbered: 1.0, "hyper_mutate": 1.0},
        cxpb=0.0,
    )
    rows = records(path)
    lines = [r for r in rows if r.operator == numbered]
    assert lines and any(r.operator == "hyper_mutate" for r in rows)
    queued = [t for t in PendingTasks(path).all() if t.operator == numbered]  # past max_evals
    assert NumberedLine.calls == len(lines) + len(queued)  # each drawn once, never 8 times


class Raises:
    """An operator with a bug that a hostile parent triggers: it raises what no contract says."""

    arity = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        raise ZeroDivisionError("a literal the operator did not expect")


def test_an_operator_that_raises_anything_is_a_failed_variation(tmp_path, monkeypatch) -> None:
    register_operator("raises", Raises)
    try:
        path = run(
            tmp_path,
            monkeypatch,
            known_surface(),
            max_evals=30,
            operators={"raises": 1.0, "hyper_mutate": 1.0},
            cxpb=0.0,
        )
    finally:
        unregister_operator("raises")
    assert sum(r.operator == "hyper_mutate" for r in records(path)) >= 12
    with RunArchive.open(path) as archive:
        failed = sum(row.get("failed_proposals", 0) for row in archive.logbook())
    assert failed > 0  # counted as failed variations, and the other operator carried on


def test_screen_must_be_a_count_from_1_to_64() -> None:
    for bad in (0, 65, 2.5, "4", True):
        with pytest.raises(UserError, match="screen"):
            RunConfig(screen=bad).validate()
    assert RunConfig(screen=1).validate().screen == 1
