"""Parent selection among the archive's elites.

`uniform` explores evenly, `fitness` leans on elites with lower val_bpb (linear
ranking), `tournament` leans harder (the best of 3 elites drawn at random: under
heavy noise and a small evaluation budget, children of the few best elites pay), and
`curiosity` (Cully & Demiris 2018) leans on elites whose recent children made it
into the archive, which keeps the search near productive stepping stones
rather than only near the current best.

`exploit` (a share, 0 by default) makes that share of children the children of the
best elite (the lowest mean), as in a greedy lineage inside the archive; the rest are
drawn by the method. docs/search_tuning.md has the figures.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evolve.errors import UserError

if TYPE_CHECKING:  # a runtime import would cycle: evolve.operators imports this module
    from evolve.operators.base import Parent

SELECTION_METHODS = ("uniform", "fitness", "tournament", "curiosity")
TOURNAMENT = 3  # elites drawn per tournament


class CuriosityTracker:
    """Per-elite curiosity scores, updated by the caller after each child is judged.

    Each update first decays the parent's score (so recent children count
    most), then adds `reward` when the child entered the archive or subtracts
    `penalty` when it did not. A parent's selection weight is `1 + score`,
    floored at `floor`, so unseen elites weigh 1 and failing ones still get a
    small chance.
    """

    def __init__(
        self, reward: float = 1.0, penalty: float = 0.5, decay: float = 0.9, floor: float = 0.1
    ) -> None:
        if not (reward >= 0 and penalty >= 0 and 0 <= decay <= 1 and floor > 0):
            raise ValueError("need reward, penalty >= 0, decay in [0, 1] and floor > 0")
        self.reward, self.penalty, self.decay, self.floor = reward, penalty, decay, floor
        self.scores: dict[str, float] = {}

    def update(self, parent_id: str, child_inserted: bool) -> None:
        """Record whether a child of `parent_id` was inserted into the archive."""
        delta = self.reward if child_inserted else -self.penalty
        self.scores[parent_id] = self.decay * self.scores.get(parent_id, 0.0) + delta

    def score(self, parent_id: str) -> float:
        return self.scores.get(parent_id, 0.0)

    def weight(self, parent_id: str) -> float:
        return max(self.floor, 1.0 + self.score(parent_id))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state, so a resumed run keeps its curiosity."""
        return {
            "reward": self.reward,
            "penalty": self.penalty,
            "decay": self.decay,
            "floor": self.floor,
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CuriosityTracker:
        tracker = cls(data["reward"], data["penalty"], data["decay"], data["floor"])
        tracker.scores = {str(k): float(v) for k, v in data["scores"].items()}
        return tracker


def check_method(method: str) -> None:
    """Raise `UserError` for an unknown selection method (call early, at config time)."""
    if method not in SELECTION_METHODS:
        raise UserError(
            f"unknown selection method {method!r}",
            f"known methods: {', '.join(SELECTION_METHODS)}",
            "set selection to one of the known methods in the config",
        )


def _rank_weights(elites: Sequence[Parent]) -> list[float]:
    """Linear ranking: best weighs n, worst 1; ties share a rank; unmeasured rank last."""
    means = [e.mean if e.mean is not None else float("inf") for e in elites]
    n = len(elites)
    return [float(n - sum(other < m for other in means)) for m in means]


def _tournament_weights(elites: Sequence[Parent], size: int = TOURNAMENT) -> list[float]:
    """The chance of each elite to win a tournament of `size` draws with replacement:
    rank r of n (1 = best) wins with ((n - r + 1)^size - (n - r)^size) / n^size; ties share."""
    means = [e.mean if e.mean is not None else float("inf") for e in elites]
    n = len(elites)
    weights = []
    for m in means:
        better = sum(other < m for other in means)
        tied = sum(other == m for other in means)
        above, below = n - better, n - better - tied  # elites not better / strictly worse
        weights.append((above**size - below**size) / tied)
    return [float(w) for w in weights]


def _best(elites: Sequence[Parent]) -> int:
    """Index of the lowest mean (the first of equals); unmeasured elites come last."""
    means = [e.mean if e.mean is not None else float("inf") for e in elites]
    return means.index(min(means))


def _weights(
    elites: Sequence[Parent], method: str, curiosity: CuriosityTracker | None
) -> list[float]:
    if method == "uniform":
        return [1.0] * len(elites)
    if method == "fitness":
        return _rank_weights(elites)
    if method == "tournament":
        return _tournament_weights(elites)
    if curiosity is None:
        raise ValueError("curiosity selection needs a CuriosityTracker")
    return [curiosity.weight(e.id) for e in elites]


def select(
    elites: Sequence[Parent],
    k: int,
    rng: random.Random,
    method: str = "uniform",
    curiosity: CuriosityTracker | None = None,
    exploit: float = 0.0,
) -> list[Parent]:
    """Pick `k` parents for one variation (k = the operator's arity).

    With probability `exploit` the first parent is the best elite (the lowest mean);
    otherwise, and for a crossover's second parent, `method` draws.

    Parents are distinct when there are enough elites, and after the first
    pick the rest come from other cells when possible, since crossing two
    elites from the same cell mostly recombines near-identical programs.
    """
    check_method(method)
    if not elites:
        raise ValueError("no elites to select from")
    if k < 1:
        raise ValueError("k must be at least 1")
    weights = _weights(elites, method, curiosity)
    chosen: list[int] = []
    if exploit > 0 and rng.random() < exploit:  # no draw at 0: runs without it are unchanged
        chosen.append(_best(elites))
    for _ in range(k - len(chosen)):
        unused = [i for i in range(len(elites)) if i not in chosen]
        cells = {elites[i].cell for i in chosen}
        other_cell = [i for i in unused if elites[i].cell is None or elites[i].cell not in cells]
        pool = other_cell or unused or list(range(len(elites)))
        chosen.append(rng.choices(pool, weights=[weights[i] for i in pool])[0])
    return [elites[i] for i in chosen]
