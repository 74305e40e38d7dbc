"""Parent selection: the draw distributions each method promises, over many seeded draws."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from evolve.errors import UserError
from evolve.operators import Parent
from evolve.selection import CuriosityTracker, select

DRAWS = 6000


def elite(pid: str, mean: float | None, cell: tuple | None = None) -> Parent:
    return Parent(id=pid, source=f"X = {len(pid)}\n", mean=mean, std=0.01, n=1, cell=cell or (pid,))


ELITES = [elite(f"e{i}", 1.0 + 0.1 * i) for i in range(5)]  # e0 best ... e4 worst


def counts(method: str, elites=ELITES, curiosity=None, seed: int = 0) -> Counter:
    rng = random.Random(seed)
    return Counter(select(elites, 1, rng, method, curiosity)[0].id for _ in range(DRAWS))


def test_uniform_is_roughly_uniform() -> None:
    got = counts("uniform")
    assert all(abs(got[e.id] - DRAWS / 5) < 0.12 * DRAWS / 5 for e in ELITES)


def test_fitness_prefers_lower_val_bpb() -> None:
    got = counts("fitness", list(reversed(ELITES)))
    order = [got[e.id] for e in ELITES]
    assert order == sorted(order, reverse=True)
    assert order[0] > 3 * order[-1]


def test_fitness_ranks_unmeasured_last_and_ties_equally() -> None:
    elites = [elite("a", 1.2), elite("b", 1.2), elite("c", None)]
    got = counts("fitness", elites)
    assert got["c"] < 0.6 * got["a"]
    assert abs(got["a"] - got["b"]) < 0.1 * got["a"]


def test_curiosity_favours_productive_parents() -> None:
    tracker = CuriosityTracker()
    for _ in range(3):
        tracker.update("e1", child_inserted=True)
        tracker.update("e3", child_inserted=False)
    got = counts("curiosity", curiosity=tracker)
    assert got["e1"] > 1.8 * got["e0"] > 1.8 * got["e3"] > 0


def test_curiosity_scores_decay_toward_recent_outcomes() -> None:
    tracker = CuriosityTracker(reward=1.0, penalty=0.5, decay=0.5)
    tracker.update("a", True)
    tracker.update("a", True)
    assert tracker.score("a") == pytest.approx(1.5)
    for _ in range(6):
        tracker.update("a", False)
    assert tracker.score("a") < 0 and tracker.weight("a") >= tracker.floor
    assert tracker.score("never") == 0.0 and tracker.weight("never") == 1.0
    again = CuriosityTracker.from_dict(tracker.to_dict())
    assert again.scores == tracker.scores and again.decay == 0.5


def test_curiosity_needs_a_tracker() -> None:
    with pytest.raises(ValueError, match="CuriosityTracker"):
        select(ELITES, 1, random.Random(0), "curiosity")


def test_pairs_are_distinct_and_prefer_different_cells() -> None:
    elites = [elite("a", 1.0, ("x",)), elite("b", 1.1, ("x",)), elite("c", 1.5, ("y",))]
    rng = random.Random(0)
    for _ in range(500):
        first, second = select(elites, 2, rng, "fitness")
        assert first.id != second.id and first.cell != second.cell
    same_cell = [elite("a", 1.0, ("x",)), elite("b", 1.1, ("x",))]
    assert {p.id for p in select(same_cell, 2, rng, "uniform")} == {"a", "b"}
    assert [p.id for p in select(same_cell[:1], 2, rng, "uniform")] == ["a", "a"]


def test_unknown_method_is_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        select(ELITES, 1, random.Random(0), "roulette")
    assert "uniform" in str(info.value) and "curiosity" in str(info.value)


def test_selection_is_reproducible_with_a_seed() -> None:
    assert counts("fitness", seed=5) == counts("fitness", seed=5)


def test_tournament_leans_harder_on_the_best_than_ranking() -> None:
    tour, rank = counts("tournament"), counts("fitness")
    # best of 3 draws among 5: the best wins 1 - (4/5)^3 = 48.8 % of the time, the worst 0.8 %
    assert abs(tour["e0"] / DRAWS - 0.488) < 0.03 and tour["e4"] / DRAWS < 0.02
    assert tour["e0"] > rank["e0"] and tour["e4"] < rank["e4"]
    tied = [elite("a", 1.0), elite("b", 1.0), elite("c", 2.0)]
    both = counts("tournament", tied)
    assert abs(both["a"] - both["b"]) < 0.05 * DRAWS  # ties share their chance
