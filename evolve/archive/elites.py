"""Noise-aware MAP-Elites: who holds each cell, judged on repeated noisy evaluations.

val_bpb of the same training script moves by a few thousandths from seed to seed.
A plain MAP-Elites archive keeps whichever genome got the luckiest single draw,
and the search then climbs noise. Here every genome carries n, mean and std of
val_bpb over its ok evaluations, and a challenger takes a cell only when its mean
is lower than the incumbent's by more than

    margin = max(min_margin, z * sqrt(s_c**2 / n_challenger + s_i**2 / n_incumbent))

i.e. a z-sigma test of the difference of two means. Noise differs from genome
to genome (a faster genome that takes more, noisier steps spreads far more than
the seed), so with `prior_weight` k > 0 each genome's s is its own spread shrunk
toward the run's measured seed noise, s**2 = (k noise**2 + (n-1) std**2) / (k + n-1):
the run's noise until it has repeats, mostly its own after many. k = 0 (the
default of old runs) uses the run's noise for every genome. Re-evaluating a genome tightens its mean, so a lucky incumbent can
later lose its cell to a challenger it once kept out.

The map is a pure function of the observations in the order they arrived and of
the rule; `set_rule` (e.g. once noise_std is measured) replays them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from evolve.config import RunConfig

Cell = tuple[int, ...]


class Decision(str, Enum):
    """What one ok evaluation did to the map."""

    NEW_CELL = "new_cell"  # first genome in an empty cell
    REPLACED = "replaced"  # the cell changed hands
    KEPT_INCUMBENT = "kept_incumbent"  # the challenger was not better by the margin
    UPDATED = "updated"  # the incumbent was re-evaluated and keeps its cell
    OFF_CLASS = "off_class"  # measured on other hardware than the run's: kept out of the map
    SEALED = "sealed_test"  # scored on the sealed test split: reported, kept out of the map


@dataclass(frozen=True)
class EliteRule:
    """Replacement and scoring settings of a run.

    offset: QD-score counts each elite as max(0, offset - mean). 10 bpb is above
    what any model that learned anything scores (uniform bytes = 8 bpb), so every
    filled cell adds a positive amount and lower bpb adds more.
    confirm_n: `best` prefers elites evaluated at least this many times.
    """

    noise_std: float = RunConfig.min_noise_std  # the floor, until the run measures its noise
    z: float = RunConfig.z
    min_margin: float = 1e-4
    offset: float = 10.0
    confirm_n: int = RunConfig.confirm
    prior_weight: float = 0.0  # pseudo-evaluations of the run's noise in each genome's spread

    def margin(self, n_challenger: int, n_incumbent: int) -> float:
        spread = self.z * self.noise_std * math.sqrt(1 / n_challenger + 1 / n_incumbent)
        return max(self.min_margin, spread)

    def genome_variance(self, stats: GenomeStats) -> float:
        """The noise variance of one genome's single evaluation: its own spread, shrunk."""
        prior = self.noise_std**2
        if self.prior_weight <= 0 or stats.n < 2:
            return prior
        own = stats.n - 1
        return (self.prior_weight * prior + own * stats.std**2) / (self.prior_weight + own)

    def margin_between(self, challenger: GenomeStats, incumbent: GenomeStats) -> float:
        """How much lower the challenger's mean must be, with each genome's own noise."""
        if self.prior_weight <= 0:
            return self.margin(challenger.n, incumbent.n)
        spread = self.z * math.sqrt(
            self.genome_variance(challenger) / challenger.n
            + self.genome_variance(incumbent) / incumbent.n
        )
        return max(self.min_margin, spread)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("noise_std", "z", "min_margin", "offset", "confirm_n", "prior_weight")
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EliteRule:
        return cls(**{k: data[k] for k in cls().to_dict() if k in data})


@dataclass
class GenomeStats:
    """Running n/mean/M2 (Welford) of one genome's val_bpb; its cell is fixed by its first ok evaluation."""

    genome: str
    cell: Cell
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    eval_ids: list[str] = field(default_factory=list)
    descriptors: dict[str, float | None] = field(default_factory=dict)

    def push(self, value: float, eval_id: str) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        self.eval_ids.append(eval_id)

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0.0 until there are two evaluations."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Elite:
    """One genome holding one cell, as shown to the rest of the program."""

    cell: Cell
    genome: str
    n: int
    mean: float
    std: float
    eval_ids: tuple[str, ...]
    descriptors: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def of(cls, stats: GenomeStats) -> Elite:
        return cls(
            stats.cell,
            stats.genome,
            stats.n,
            stats.mean,
            stats.std,
            tuple(stats.eval_ids),
            dict(stats.descriptors),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": list(self.cell),
            "genome": self.genome,
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "eval_ids": list(self.eval_ids),
            "descriptors": self.descriptors,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Elite:
        return cls(
            tuple(d["cell"]),
            d["genome"],
            int(d["n"]),
            float(d["mean"]),
            float(d["std"]),
            tuple(d["eval_ids"]),
            dict(d.get("descriptors") or {}),
        )


def qd_score(elites: Iterable[Elite], offset: float = 10.0) -> float:
    return sum(max(0.0, offset - e.mean) for e in elites)


def best_elite(elites: Sequence[Elite], confirm_n: int = 3) -> Elite | None:
    """Lowest mean among elites evaluated >= confirm_n times, else lowest mean of all."""
    confirmed = [e for e in elites if e.n >= confirm_n]
    pool = confirmed or list(elites)
    return min(pool, key=lambda e: e.mean, default=None)


def summarize(elites: Sequence[Elite], total_cells: int, rule: EliteRule) -> dict[str, Any]:
    """The per-generation numbers: coverage, qd_score, best (mean bpb), mean (of elite means)."""
    best = best_elite(elites, rule.confirm_n)
    return {
        "coverage": len(elites) / total_cells,
        "qd_score": qd_score(elites, rule.offset),
        "best": None if best is None else best.mean,
        "mean": sum(e.mean for e in elites) / len(elites) if elites else None,
    }


@dataclass(frozen=True)
class Observation:
    genome: str
    cell: Cell
    val_bpb: float
    eval_id: str
    descriptors: dict[str, float | None] = field(default_factory=dict)


class ElitesMap:
    """Cells -> holder genome, plus the stats of every genome seen (challengers included)."""

    def __init__(self, total_cells: int, rule: EliteRule | None = None) -> None:
        self.total_cells = total_cells
        self.rule = rule or EliteRule()
        self._reset()

    def _reset(self) -> None:
        self.genomes: dict[str, GenomeStats] = {}
        self._holders: dict[Cell, str] = {}
        self._members: dict[Cell, list[str]] = {}
        self._history: list[Observation] = []

    def add(
        self,
        genome: str,
        cell: Sequence[int],
        val_bpb: float,
        eval_id: str,
        descriptors: Mapping[str, float | None] | None = None,
    ) -> Decision:
        """Take one ok evaluation into account. A known genome keeps the cell of its first one."""
        if not math.isfinite(val_bpb):
            raise ValueError(f"val_bpb must be finite, got {val_bpb}")
        obs = Observation(genome, tuple(cell), float(val_bpb), eval_id, dict(descriptors or {}))
        self._history.append(obs)
        return self._apply(obs)

    def _apply(self, obs: Observation) -> Decision:
        stats = self.genomes.get(obs.genome)
        if stats is None:
            stats = GenomeStats(obs.genome, obs.cell, descriptors=obs.descriptors)
            self.genomes[obs.genome] = stats
            self._members.setdefault(obs.cell, []).append(obs.genome)
        stats.push(obs.val_bpb, obs.eval_id)
        cell = stats.cell
        holder = self._holders.get(cell)
        if holder is None:
            self._holders[cell] = obs.genome
            return Decision.NEW_CELL
        if holder != obs.genome:
            if self._beats(stats, self.genomes[holder]):
                self._holders[cell] = obs.genome
                return Decision.REPLACED
            return Decision.KEPT_INCUMBENT
        # The incumbent's mean moved: the best challenger that now clears the margin takes over.
        incumbent = self.genomes[holder]
        winners = [
            self.genomes[g]
            for g in self._members[cell]
            if g != holder and self._beats(self.genomes[g], incumbent)
        ]
        if winners:
            self._holders[cell] = min(winners, key=lambda s: s.mean).genome
            return Decision.REPLACED
        return Decision.UPDATED

    def _beats(self, challenger: GenomeStats, incumbent: GenomeStats) -> bool:
        margin = self.rule.margin_between(challenger, incumbent)
        return challenger.mean < incumbent.mean - margin

    def close_call(self, genome: str) -> bool:
        """True when `genome` is kept out of its cell although its mean is lower than the
        holder's: better, but not yet by the noise margin. More evaluations decide it."""
        stats = self.genomes.get(genome)
        if stats is None:
            return False
        holder = self._holders.get(stats.cell)
        if holder is None or holder == genome:
            return False
        incumbent = self.genomes[holder]
        return stats.mean < incumbent.mean and not self._beats(stats, incumbent)

    def _replay(self, history: list[Observation]) -> None:
        self._reset()
        for obs in history:
            self._history.append(obs)
            self._apply(obs)

    def set_rule(self, rule: EliteRule) -> None:
        """Change the rule (e.g. noise_std once measured) and replay every observation under it."""
        self.rule = rule
        self._replay(self._history)

    def forget(self, eval_ids: Iterable[str]) -> None:
        """Drop observations (their evaluations never reached the disk) and replay the rest."""
        drop = set(eval_ids)
        self._replay([obs for obs in self._history if obs.eval_id not in drop])

    def elites(self) -> list[Elite]:
        return [Elite.of(self.genomes[g]) for _, g in sorted(self._holders.items())]

    def elite_at(self, cell: Sequence[int]) -> Elite | None:
        genome = self._holders.get(tuple(cell))
        return None if genome is None else Elite.of(self.genomes[genome])

    @property
    def coverage(self) -> float:
        return len(self._holders) / self.total_cells

    def best(self) -> Elite | None:
        return best_elite(self.elites(), self.rule.confirm_n)
