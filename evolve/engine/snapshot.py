"""A read-only picture of a running engine: what the progress display and the final summary show.

The engine builds it under its lock (`Engine.snapshot()`), so display code never reads the
engine's internals and the engine can change them freely.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from evolve.archive.elites import best_elite, summarize
from evolve.textsafe import printable


@dataclass(frozen=True)
class Best:
    """The best elite as `evolve show` picks it: confirmed means first."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Snapshot:
    run: str
    gen: int
    evals: int  # evaluations in the archive
    done_here: int  # evaluations recorded by this process
    planned: int | None  # children planned (None: no limit)
    best: Best | None
    coverage: float
    qd_score: float
    slots: dict[str, str]  # slot name -> what runs there (busy slots only)
    slot_names: list[str]
    failed_proposals: int
    statuses: dict[str, int]
    elapsed: float
    eta: float | None  # seconds; None until there is a rate and a plan
    events: list[str] = field(default_factory=list)  # recent ideas and reasons, made printable
    llm: dict[str, Any] | None = None  # LLM calls, failures, tokens, cost (None: no LLM)


def take(engine: Any, outstanding: int) -> Snapshot:
    """Build a snapshot of `engine` (an Engine); `outstanding`: tasks queued or running."""
    state, archive = engine.state, engine.archive
    with engine.lock:
        elites = archive.elites()
    summary = summarize(elites, archive.grid.total_cells, archive.rule)
    best = best_elite(elites, archive.rule.confirm_n)  # as the summary and the logbook
    elapsed = time.monotonic() - state.started
    eta = None
    if state.done and math.isfinite(state.planned):
        remaining = max(0.0, state.planned - state.issued + outstanding)
        eta = elapsed / state.done * remaining
    return Snapshot(
        run=archive.name,
        gen=state.gen,
        evals=state.total,
        done_here=state.done,
        planned=None if math.isinf(state.planned) else int(state.planned),
        best=None if best is None else Best(best.mean, best.std, best.n),
        coverage=summary.get("coverage", 0.0),
        qd_score=summary.get("qd_score", 0.0),
        slots=engine.executor.busy(),
        slot_names=list(engine.executor.slots),
        failed_proposals=state.failed_proposals,
        statuses=dict(state.statuses),
        elapsed=elapsed,
        eta=eta,
        events=[printable(e) for e in state.last_events],  # ideas and reasons: untrusted text
        llm=engine.llm_stats(),
    )
