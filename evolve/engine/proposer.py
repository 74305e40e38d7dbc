"""Turns the archive's current state into the next task: a seed, a child, or a re-evaluation.

Children are de-duplicated by normalised-AST hash before any training: a child
that is only a reformatting of a genome already tried is thrown away and the
operator asked again.

Operators with an `attach` method (the LLM operators) are handed this proposer
as their view of the run: `context()` reads the history they show the LLM and
`is_known()` lets them tell the LLM at once that a program was already tried.
Operators with an `available` method that says False (an LLM over its cost cap
or pausing after failures) are passed over in favour of the others, and so is,
for the rest of one proposal, an operator that just failed it: a failed
variation is retried with another operator, and reported to `on_failure`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from evolve.archive import Elite, RunArchive
from evolve.engine.screening import Screen
from evolve.operators import Child, Operator, Parent, VariationError
from evolve.operators.dedupe import normalized_hash
from evolve.operators.llm.context import RunContext, gather
from evolve.operators.llm.view import elite_parent
from evolve.operators.mix import OperatorMix
from evolve.selection import CuriosityTracker, check_method, select

MAX_TRIES = 8  # attempts at a fresh, valid child before the proposal counts as failed
REDRAWS = 20  # draws that look for an available operator before using an unavailable one


class Proposer:
    """Makes tasks; safe to call from several threads (archive reads hold `lock`)."""

    def __init__(
        self,
        archive: RunArchive,
        mix: OperatorMix,
        selection: str,
        seeds: list[str],
        lock: threading.RLock,
        curiosity: CuriosityTracker,
    ) -> None:
        self.archive = archive
        check_method(selection)
        self.mix = mix
        self.selection = selection
        self.seeds = seeds  # genome hashes of the seed genomes
        self.lock = lock
        self.curiosity = curiosity
        self.strategy: Any = None  # the engine's search strategy: who may be a parent
        known = _known_genomes(archive) | set(seeds)  # a child equal to a seed is no child
        self.seen = {normalized_hash(archive.genome_source(g)) for g in known}
        for op in mix.operators:
            if hasattr(op, "attach"):
                op.attach(self)

    def parents(self) -> list[Parent]:
        """Elites as operator parents; before any elite exists, the seed genomes."""
        with self.lock:
            elites = self.strategy.parents() if self.strategy else self.archive.elites()
            if elites:
                return [self._parent(e) for e in elites]
            return [Parent(id=g, source=self.archive.genome_source(g)) for g in self.seeds]

    def _parent(self, elite: Elite) -> Parent:
        return elite_parent(self.archive, elite)  # the same parent `evolve prompt` shows

    def child(
        self, rng: random.Random, on_failure: Callable[[str, VariationError], None] | None = None
    ) -> Child:
        """Select parents, vary them, and return a child that was never tried before.

        An operator that fails is reported to `on_failure(name, error)` and passed over
        for the next tries when another operator can be used."""
        error: Exception | None = None
        failed: set[str] = set()
        for _ in range(MAX_TRIES):
            pool = self.parents()
            operator = self._choose(len(pool), rng, avoid=failed)
            exploit = self.strategy.exploit if self.strategy else 0.0  # children of the best
            chosen = select(
                pool,
                operator.arity,
                rng,
                method=self.selection,
                curiosity=self.curiosity,
                exploit=exploit,
            )
            try:
                child = _vary(operator, chosen, rng)
                screen = self.strategy.screen if self.strategy else None
                if screen is not None and screen.applies(operator):
                    child = self._screened(child, operator, chosen, rng, screen)
                digest = normalized_hash(child.source)
            except VariationError as exc:
                error = exc
                failed.add(operator.name)
                if on_failure is not None:
                    on_failure(operator.name, exc)
                continue
            with self.lock:
                if digest in self.seen:
                    error = VariationError(
                        f"{operator.name} produced a duplicate of a known genome"
                    )
                    continue
                self.seen.add(digest)
            return child
        raise VariationError(f"no new valid child after {MAX_TRIES} tries: {error}")

    def _screened(
        self,
        first: Child,
        operator: Operator,
        parents: list[Parent],
        rng: random.Random,
        screen: Screen,
    ) -> Child:
        """`screen.draws` variations of the same parents; the new one the archive predicts best."""
        children, digests = [], set()
        for k in range(screen.draws):
            try:
                child = first if k == 0 else _vary(operator, parents, rng)
                digest = normalized_hash(child.source)
            except VariationError:
                continue
            with self.lock:
                known = digest in self.seen
            if not known and digest not in digests:
                children.append(child)
                digests.add(digest)
        return screen.pick(children) if children else first  # none new: the caller retries

    def _choose(
        self, n_available: int, rng: random.Random, avoid: set[str] | frozenset[str] = frozenset()
    ) -> Operator:
        """Draw by weight among the operators available now, preferring those not in `avoid`."""
        drawn = []
        for _ in range(REDRAWS):
            operator = self.mix.choose(n_available, rng)
            if _available(operator) and operator.name not in avoid:
                return operator
            drawn.append(operator)
        # nothing else is configured: an available one that failed before, else let it try
        return next((op for op in drawn if _available(op)), drawn[-1])

    def context(self, parents: list[Parent], **limits: int) -> RunContext:
        """Lineage, log tails, other elites and recent failures, for an LLM prompt."""
        with self.lock:
            return gather(self.archive, parents, **limits)

    def is_known(self, source: str) -> bool:
        """True when a program with the same normalised AST was already tried or proposed."""
        try:
            digest = normalized_hash(source)
        except VariationError:
            return False
        with self.lock:
            return digest in self.seen


def _vary(operator: Operator, parents: list[Parent], rng: random.Random) -> Child:
    """`operator.vary`, where anything it raises is a failed variation: parents may be written
    by an LLM, and an operator bug that one of them triggers must not stop the run."""
    try:
        return operator.vary(parents, rng)
    except VariationError:
        raise
    except Exception as exc:
        raise VariationError(f"{operator.name} raised {type(exc).__name__}: {exc}") from exc


def _available(operator: Operator) -> bool:
    return getattr(operator, "available", lambda: True)()


def _known_genomes(archive: RunArchive) -> set[str]:
    return {record.genome for record in archive.evaluations()}
