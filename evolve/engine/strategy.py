"""Search strategies: which genomes are parents, which one is the run's best, what is raced.

All three run in the same engine, with the same operators, budget, archive format
and browse commands, so they can be compared like for like (benchmarks/bench_search.py):

- `map-elites` (default): parents are the archive's elites, one per cell; a share
  `exploit` of children are children of the best elite (0 by default), and with
  `screen` > 1 each built-in child is the most promising of that many drawn
  (evolve.engine.screening).
- `greedy`: autoresearch's protocol. Every child comes from the current champion; a
  child replaces it only when it is better by the noise gate (z noise std; `--z 0`:
  any lower score wins). The champion is a one-cell map fed with every ok val
  evaluation in arrival order, so it is a pure function of the records, like the
  archive's map, and survives resume. The archive still bins every child into its
  grid, so coverage is measured the same way for every strategy.
- `random`: every child is a variation of a seed genome; the baseline that says how
  much selection adds at all.

Racing: a child whose mean is lower than the genome it challenges (its cell's holder,
or greedy's champion) but not by the noise margin is a close call. The engine
re-evaluates it (up to `race` evaluations in all) until the gate decides either way;
those evaluations are ordinary records and count in every comparison.
"""

from __future__ import annotations

from evolve.archive import Decision, Elite, EliteRule, ElitesMap, RunArchive
from evolve.archive.elites import best_elite
from evolve.config import RunConfig
from evolve.engine.screening import Screen
from evolve.errors import UserError
from evolve.record import Evaluation

STRATEGIES = ("map-elites", "greedy", "random")
OBSERVED = {
    d.value
    for d in (Decision.NEW_CELL, Decision.REPLACED, Decision.KEPT_INCUMBENT, Decision.UPDATED)
}  # decisions of records the archive's map took in
LINEAGE_CELL = (0,)


def check_strategy(name: str) -> None:
    """Raise `UserError` for an unknown strategy (call at config time)."""
    if name not in STRATEGIES:
        raise UserError(
            f"unknown search strategy {name!r}",
            f"known strategies: {', '.join(STRATEGIES)}",
            "pass --strategy map-elites, greedy or random",
        )


class Strategy:
    """MAP-Elites: the archive's elites are the parents; the lowest mean is the best."""

    name = "map-elites"

    def __init__(
        self,
        archive: RunArchive,
        seeds: list[str],
        exploit: float = RunConfig.exploit,
        screen: int = RunConfig.screen,
    ) -> None:
        self.archive, self.seeds = archive, seeds
        self.exploit = exploit  # share of children whose (first) parent is the best elite
        self.screen: Screen | None = None  # picks the most promising of several cheap children
        if screen > 1 and seeds:
            self.screen = Screen(screen, archive.genome_source(seeds[0]), archive.genome_source)
            for record in archive.evaluations():  # a resumed run screens with what it knew
                self.screen.observe(record)

    def observe(self, record: Evaluation) -> None:
        """Take one stored record into account (every record, in the order stored)."""
        if self.screen is not None:
            self.screen.observe(record)

    def set_rule(self, rule: EliteRule) -> None:
        """The archive's rule changed (the noise level was measured)."""

    def parents(self) -> list[Elite]:
        """Genomes to draw parents from; empty: the seed genomes."""
        return self.archive.elites()

    def best(self) -> Elite | None:
        """The genome to confirm with re-evaluations: the lowest mean, confirmed or not."""
        return min(self.archive.elites(), key=lambda e: e.mean, default=None)

    def confirmed(self, confirm: int) -> Elite | None:
        """The reported best: the lowest mean among those with `confirm` evaluations."""
        best = best_elite(self.archive.elites(), confirm)
        return best if best is not None and best.n >= confirm else None

    def close_call(self, genome: str) -> bool:
        """True when `genome` lost its comparison by less than the noise margin."""
        return self.archive.elite_map.close_call(genome)

    def evaluations(self, genome: str) -> int:
        stats = self.archive.elite_map.genomes.get(genome)
        return 0 if stats is None else stats.n


class RandomStrategy(Strategy):
    """Every child is a variation of a seed genome."""

    name = "random"

    def __init__(self, archive: RunArchive, seeds: list[str]) -> None:
        super().__init__(archive, seeds, 0.0, 1)  # no exploitation, no screening: the baseline

    def parents(self) -> list[Elite]:
        genomes = self.archive.elite_map.genomes
        return [Elite.of(genomes[g]) for g in self.seeds if g in genomes]


class GreedyStrategy(Strategy):
    """One lineage: the champion is the only parent and is replaced only through the gate."""

    name = "greedy"

    def __init__(self, archive: RunArchive, seeds: list[str]) -> None:
        super().__init__(archive, seeds, 0.0, 1)  # autoresearch's protocol: no screening
        self.lineage = ElitesMap(1, archive.rule)
        for record in archive.evaluations():
            self.observe(record)

    def observe(self, record: Evaluation) -> None:
        if record.decision not in OBSERVED or record.sealed or record.val_bpb is None:
            return
        self.lineage.add(record.genome, LINEAGE_CELL, record.val_bpb, record.id)

    def set_rule(self, rule: EliteRule) -> None:
        self.lineage.set_rule(rule)

    def champion(self) -> Elite | None:
        return self.lineage.elite_at(LINEAGE_CELL)

    def parents(self) -> list[Elite]:
        champion = self.champion()
        return [] if champion is None else [champion]

    def best(self) -> Elite | None:
        return self.champion()

    def confirmed(self, confirm: int) -> Elite | None:
        champion = self.champion()
        return champion if champion is not None and champion.n >= confirm else None

    def close_call(self, genome: str) -> bool:
        return self.lineage.close_call(genome)

    def evaluations(self, genome: str) -> int:
        stats = self.lineage.genomes.get(genome)
        return 0 if stats is None else stats.n


def make_strategy(
    name: str,
    archive: RunArchive,
    seeds: list[str],
    exploit: float = RunConfig.exploit,
    screen: int = RunConfig.screen,
) -> Strategy:
    """`exploit` and `screen` apply to map-elites only: greedy is autoresearch's protocol
    (one parent, every child evaluated as drawn), random the baseline of the seed's children."""
    check_strategy(name)
    if name == "map-elites":
        return Strategy(archive, seeds, exploit, screen)
    kinds = {"greedy": GreedyStrategy, "random": RandomStrategy}
    return kinds[name](archive, seeds)
