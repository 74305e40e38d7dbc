"""Which reference curve a child is held to, and how far behind it may fall (`--prune`).

With `prune_reference = "parent"` (the default) the reference is the parent's reported
training curve (for a crossover, the worse of the two parents at each checkpoint: a child
is stopped only when it trails both). With `"cell"` it is the curve of the incumbent of
the cell the child is predicted to land in: the genome it must beat to enter the archive.
The prediction is the one a curve comparison needs anyway: an elite with the child's
shape (every `prune_shape` constant equal), whose measured descriptors, with those read
from the child's own source (its line count), put the child in that elite's own cell.
A child of a shape no elite has, or bound for an empty cell, is never pruned.
The margin comes from the seed's repeated evaluations: the spread of their curves at
the same training time, times `prune_z`, and never under `prune_min_margin` of the
reference; until two seed curves exist, `prune_default_margin` of the reference.
All of these curves are reported by genomes: they can only stop a child early,
never score or place one (see `evolve.runner.curve`). A parent that under-reports its
loss would set an impossible reference for its children, so a parent's curve is used
only when it is plausible beside its own evaluated score: relative to the seed, its
reported final loss may not be lower than its val_bpb is by more than PLAUSIBLE
(otherwise its children are not pruned at all).

Either way a child is only held to a curve of its own shape: a wider or deeper model
learns more slowly in its first seconds than its parent, and it usually lands in another
cell, where it enters the archive however its score compares with its parent's. So with
the parent as the reference, a child that changes any `prune_shape` constant is never
pruned. Replayed on real curves, every archive entry that pruning lost without this rule
was such a child (README, "Pruning, measured").
"""

from __future__ import annotations

import math
import statistics

from evolve.archive import RunArchive
from evolve.config import RunConfig
from evolve.operators import VariationError
from evolve.operators.hyperparams import find_constants
from evolve.record import Evaluation
from evolve.runner.curve import WINDOW, PrunePlan, clean, loss_at

PLAUSIBLE = 0.8  # parent's (final loss / seed's) must be >= this x (its val_bpb / seed's)


class Pruning:
    """Makes each child's `PrunePlan`; reads the archive, never writes it."""

    def __init__(self, config: RunConfig, archive: RunArchive, seeds: list[str]) -> None:
        self.config, self.archive, self.seeds = config, archive, seeds
        self.budget = float(config.budget)
        self.window = WINDOW * self.budget
        self.checkpoints = [float(c) * self.budget for c in config.prune_checkpoints]
        self._spread: list[float | None] | None = None  # per checkpoint, once final
        self._spread_final = False
        # genome -> its prune_shape values (None: does not parse); a genome's source never changes
        self._shapes: dict[str, tuple | None] = {}

    def plan(self, parents: list[str], child: str | None = None) -> PrunePlan | None:
        """The plan for `child` (a genome hash) of `parents`; None when pruning is off, no
        reference genome has a curve, or none of the child's shape exists (see above)."""
        if self.config.prune == "off" or not parents:
            return None
        if self.config.prune_reference == "cell":
            holder = None if child is None else self.cell_holder(child)
            if holder is None:
                return None
            references, source = [holder], f"incumbent {holder[:8]} of the child's cell"
        else:
            if child is not None and any(self.reshaped(child, parent) for parent in parents):
                return None
            references = parents
            source = "parent " + parents[0][:8] if len(parents) == 1 else "the worse parent"
        if not all(self.plausible(genome) for genome in references):
            return None  # a curve that claims more than the evaluator measured: not a reference
        curves = [self._reference(genome) for genome in references]
        if any(curve is None for curve in curves):
            return None  # a reference without a curve: nothing to compare against
        reference = [max(values) for values in zip(*curves, strict=True)]
        spread = self.spread()
        margin = []
        for ref, std in zip(reference, spread, strict=True):
            if std is None:
                margin.append(self.config.prune_default_margin * abs(ref))
            else:
                margin.append(
                    max(self.config.prune_z * std, self.config.prune_min_margin * abs(ref))
                )
        return PrunePlan(
            mode=self.config.prune,
            checkpoints=list(self.checkpoints),
            reference=reference,
            margin=margin,
            window=self.window,
            source=source,
        )

    def reshaped(self, child: str, parent: str) -> bool:
        """Whether `child` sets any `prune_shape` constant otherwise than `parent` (a source
        that does not parse counts as reshaped: nothing is known about its model)."""
        ours = self._shape(child)
        return ours is None or ours != self._shape(parent)

    def cell_holder(self, child: str) -> str | None:
        """The elite of the child's predicted cell when it has the child's shape; else None."""
        shape = self._shape(child)
        if shape is None:
            return None
        source = self.archive.genome_source(child)
        grid = self.archive.grid
        for elite in self.archive.elites():
            if self._shape(elite.genome) != shape:
                continue
            record = self.archive.get(elite.eval_ids[-1])
            if record is None:
                continue
            predicted = grid.cell_if_known(grid.describe(record.result, source))
            if predicted == tuple(elite.cell):
                return elite.genome
        return None

    def _shape(self, genome: str) -> tuple | None:
        """The genome's `prune_shape` values (None: its source does not parse)."""
        if genome not in self._shapes:
            try:
                constants = find_constants(self.archive.genome_source(genome))
            except VariationError:
                self._shapes[genome] = None
            else:
                values = (getattr(constants.get(n), "value", None) for n in self.config.prune_shape)
                self._shapes[genome] = tuple(values)
        return self._shapes[genome]

    def plausible(self, genome: str) -> bool:
        """Whether a genome's reported curve agrees, relative to the seeds', with its score."""
        end = 1.05 * self.budget  # points stamped just after the budget still count
        own, seed = self._end_and_score(genome, end), None
        if own is None:
            return False
        if genome in self.seeds:
            return True  # the user's own programs: the yardstick
        for candidate in self.seeds:
            seed = seed or self._end_and_score(candidate, end)
        if seed is None:
            return False  # nothing to check a curve against: no reference
        (own_loss, own_bpb), (seed_loss, seed_bpb) = own, seed
        if seed_loss <= 0 or seed_bpb <= 0:
            return False
        return own_loss / seed_loss >= PLAUSIBLE * own_bpb / seed_bpb

    def _end_and_score(self, genome: str, end: float) -> tuple[float, float] | None:
        """(median final reported loss, mean val_bpb) of a genome's scored evaluations."""
        losses, scores = [], []
        for record in self._scored(genome):
            loss = loss_at(clean(record.result.curve), end, 2 * self.window)
            bpb = record.val_bpb
            if loss is not None and bpb is not None:
                losses.append(loss)
                scores.append(bpb)
        if not losses:
            return None
        return statistics.median(losses), sum(scores) / len(scores)

    def _scored(self, genome: str) -> list[Evaluation]:
        return [
            r for r in self.archive.evaluations_of(genome) if r.ok and not r.sealed and r.comparable
        ]

    def _curves(self, genome: str) -> list[list[tuple[float, float]]]:
        """The curves of a genome's in-class, val-split, scored evaluations."""
        curves = []
        for record in self._scored(genome):
            points = clean(record.result.curve)
            if points:
                curves.append(points)
        return curves

    def _reference(self, genome: str) -> list[float] | None:
        """The median of the genome's curves at each checkpoint; inf where none reaches it
        (a checkpoint no reference covers never stops anyone)."""
        curves = self._curves(genome)
        if not curves:
            return None
        out = []
        for at in self.checkpoints:
            values = [v for v in (loss_at(c, at, self.window) for c in curves) if v is not None]
            out.append(statistics.median(values) if values else math.inf)
        return out

    def spread(self) -> list[float | None]:
        """Per checkpoint: the pooled std of the seed repeats' smoothed loss; None unmeasured."""
        if self._spread is not None and self._spread_final:
            return self._spread
        variances: list[list[float]] = [[] for _ in self.checkpoints]
        complete = True
        for seed in self.seeds:
            curves = self._curves(seed)
            complete &= len(curves) >= self.config.noise_repeats
            for i, at in enumerate(self.checkpoints):
                values = [v for v in (loss_at(c, at, self.window) for c in curves) if v is not None]
                if len(values) >= 2:
                    variances[i].append(statistics.variance(values))
        self._spread = [math.sqrt(sum(v) / len(v)) if v else None for v in variances]
        self._spread_final = complete and bool(self.seeds)
        return self._spread
