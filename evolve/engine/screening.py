"""Pre-screening: draw several cheap children, evaluate the one the archive predicts best.

A greedy lineage learns nothing from a child that lost; the archive keeps every
evaluation. Pre-screening (surrogate-assisted illumination, as in SAIL, Gaier et al.
2017) puts that record to work: before a child of a built-in hyperparameter operator is
evaluated, `screen` variations of the same parents are drawn (cheap: no training, no LLM
call) and the one a surface fitted to the run's own evaluations predicts lowest is kept.

The surface is a ridge regression of each genome's mean val_bpb on its constants' log
ratios to the seed's (`evolve.surface`), linear on purpose: a direction that helped is
followed further, one operator step at a time, instead of waiting for a lucky draw to
repeat it. Genomes whose every evaluation failed (crashed, over budget, pruned...) count
at the worst mean seen, so the regions that fail are predicted bad. Until `MIN_GENOMES` genomes
have a mean, the first child is kept, as without screening.

On by default (`screen = 8`): interleaved real runs (README, "Pre-screening") ended lower
with it in 4 of 5 seeds; `screen = 1` turns it off.

Only children of operators that edit constants are screened: the surface reads nothing
else, and an LLM child costs a call, so it is never drawn more than once. The model only
orders candidates; every kept child is still trained and scored by the harness.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from evolve.operators import Child, HyperparamCrossover, HyperparamMutation, Operator
from evolve.record import Evaluation
from evolve.surface import constant_values, features, ridge

SCREENABLE = (HyperparamMutation, HyperparamCrossover)  # they change constants, nothing else
MIN_GENOMES = 8  # genomes with a mean before the fit is trusted to order children
RIDGE = 1.0  # shrinkage: with few genomes, a constant that moved once gets a small weight


class Screen:
    """The run's own response surface, fed every stored record (`observe`) in order."""

    def __init__(self, draws: int, seed_source: str, source_of: Callable[[str], str]) -> None:
        """`draws`: children drawn per kept child; `source_of(genome)`: a genome's source."""
        self.draws = draws
        self.reference = constant_values(seed_source)
        self.names = sorted(self.reference)
        self._source_of = source_of
        self._sums: dict[str, tuple[float, int]] = {}  # genome -> (sum of val_bpb, n)
        self._failed: set[str] = set()
        self._rows: dict[str, np.ndarray] = {}  # genome -> features (sources never change)
        self._weights: np.ndarray | None = None
        self._stale = True
        self._lock = threading.Lock()

    def applies(self, operator: Operator) -> bool:
        """Whether `operator`'s children are screened: cheap ones that edit constants only."""
        return isinstance(operator, SCREENABLE)

    def observe(self, record: Evaluation) -> None:
        """Take one stored record in (val evaluations only; the test split stays sealed)."""
        if record.sealed or record.status.infrastructure:
            return
        with self._lock:
            if record.ok and record.val_bpb is not None and record.comparable:
                total, n = self._sums.get(record.genome, (0.0, 0))
                self._sums[record.genome] = (total + record.val_bpb, n + 1)
            elif not record.ok:  # crashed, over budget, pruned...: predicted bad
                self._failed.add(record.genome)
            else:
                return  # measured on other hardware
            self._stale = True

    def pick(self, children: list[Child]) -> Child:
        """The child with the lowest predicted val_bpb (the first while the fit is untrusted)."""
        weights = self._fit()
        if weights is None or len(children) == 1:
            return children[0]
        predicted = self._design([self._x(c.source) for c in children]) @ weights
        return children[int(np.argmin(predicted))]  # argmin: the first of equals

    def predict(self, source: str) -> float | None:
        """Predicted val_bpb of a genome (None: too few genomes to fit)."""
        weights = self._fit()
        return None if weights is None else float((self._design([self._x(source)]) @ weights)[0])

    def _fit(self) -> np.ndarray | None:
        with self._lock:
            if not self._stale:
                return self._weights
            means = {g: total / n for g, (total, n) in self._sums.items()}
            self._stale = False
            if len(means) < MIN_GENOMES:
                self._weights = None
                return None
            worst = max(means.values())
            targets = {**{g: worst for g in self._failed if g not in means}, **means}
            genomes = sorted(targets)
            x = [self._row(g) for g in genomes]
            y = np.asarray([targets[g] for g in genomes])
            self._weights = ridge(self._design(x), y, RIDGE)
            return self._weights

    def _row(self, genome: str) -> np.ndarray:
        if genome not in self._rows:
            self._rows[genome] = self._x(self._source_of(genome))
        return self._rows[genome]

    def _x(self, source: str) -> np.ndarray:
        return features(source, self.reference, self.names)

    @staticmethod
    def _design(rows: list[np.ndarray]) -> np.ndarray:
        x = np.atleast_2d(np.asarray(rows, dtype=float))
        return np.hstack([np.ones((x.shape[0], 1)), x])
