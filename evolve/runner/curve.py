"""Training curves the genome reports, and the runner's early-stopping test on them.

`run.log(step=..., loss=...)` sends a `curve` message on the result channel; the
runner stamps it with its own clock (seconds since the budget started) and keeps a
thinned copy. The curve is the genome's own word: it may only ever stop the genome
that sent it (a child clearly behind its reference is pruned), never score or
place it. A genome that lies low is not pruned and is scored honestly by the
evaluator; one that lies high only stops itself; one that reports nothing is never
pruned.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_POINTS = 128  # points kept per evaluation (and stored in its record)
WINDOW = 0.1  # the loss "at" time t: median of the points in the last WINDOW x budget

# (training seconds on the runner's clock, step as reported, loss as reported)
Point = tuple[float, int, float]


class Curve:
    """The points of one evaluation, thinned to at most `limit` (every other one is dropped
    when full, so the kept points stay spread over the whole run)."""

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.points: list[Point] = []
        self.limit = limit
        self._stride, self._seen = 1, 0

    def add(self, seconds: float, step: int, loss: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        self.points.append((round(seconds, 3), step, float(f"{loss:.6g}")))
        if len(self.points) >= self.limit:
            self.points = self.points[::2]
            self._stride *= 2

    def as_list(self) -> list[list[float]]:
        return [list(p) for p in self.points]


def clean(raw: object) -> list[tuple[float, float]]:
    """(seconds, loss) pairs of a stored curve, skipping anything malformed (old records)."""
    out: list[tuple[float, float]] = []
    if not isinstance(raw, list):
        return out
    for point in raw:
        if isinstance(point, (list, tuple)) and len(point) == 3:
            t, loss = point[0], point[2]
            if (
                isinstance(t, (int, float))
                and isinstance(loss, (int, float))
                and math.isfinite(t)
                and math.isfinite(loss)
            ):
                out.append((float(t), float(loss)))
    return out


def loss_at(points: Sequence[tuple[float, float]], t: float, window: float) -> float | None:
    """The smoothed loss at training time t: the median of the points in [t - window, t]; the
    last point before t if that window is empty but the point is within 2 windows; else None."""
    recent = [loss for s, loss in points if t - window <= s <= t]
    if recent:
        return statistics.median(recent)
    before = [(s, loss) for s, loss in points if t - 2 * window <= s <= t]
    return before[-1][1] if before else None


@dataclass
class PrunePlan:
    """What the runner compares a child against; made by the engine (`evolve.engine.pruning`).

    `reference` and `margin` are (training seconds, value) samples at the checkpoints.
    mode "on" stops a child behind the reference; "shadow" only records when it would have.
    """

    mode: str  # "on" | "shadow"
    checkpoints: list[float]  # seconds of training
    reference: list[float]  # smoothed reference loss at each checkpoint
    margin: list[float]  # how far behind a child may be there
    window: float  # seconds; the smoothing window
    source: str = ""  # what the reference is, for the reason line
    decided: set[int] = field(default_factory=set)  # checkpoints already looked at

    def due(self, t: float) -> list[int]:
        return [i for i, c in enumerate(self.checkpoints) if c <= t and i not in self.decided]

    def judge(self, points: Sequence[Point], t: float) -> dict | None:
        """At training time t: the verdict of the first checkpoint that says 'behind', or None.

        Checkpoints that have passed are judged once each, at the child's curve as it
        stands when the runner looks (a checkpoint is never judged on later points)."""
        pairs = [(s, loss) for s, _, loss in points]
        for i in self.due(t):
            self.decided.add(i)
            at = self.checkpoints[i]
            loss = loss_at(pairs, at, self.window)
            if loss is None:
                continue  # nothing reported near the checkpoint: never pruned for silence
            if loss > self.reference[i] + self.margin[i]:
                return {
                    "checkpoint": i,
                    "at": round(at, 3),
                    "loss": loss,
                    "reference": round(self.reference[i], 6),
                    "margin": round(self.margin[i], 6),
                    "source": self.source,
                }
        return None


def reason(verdict: dict, budget: float) -> str:
    """The one-line reason of a pruned record."""
    return (
        f"pruned at {verdict['at']:.1f} s of {budget:g} s: reported training loss "
        f"{verdict['loss']:.4g} is behind the reference {verdict['reference']:.4g} "
        f"({verdict['source']}) by more than the margin {verdict['margin']:.3g}"
    )


def brief(raw: object, budget: float, points: int = 6) -> str:
    """A few points of a stored curve on one line, for the LLM prompt and terminal views."""
    pairs = clean(raw)
    if not pairs:
        return ""
    window = WINDOW * budget
    marks = [budget * k / points for k in range(1, points + 1)]
    parts = []
    for t in marks:
        loss = loss_at(pairs, min(t, pairs[-1][0]), window)
        if loss is not None:
            parts.append(f"{t:.0f}s {loss:.3f}" if budget >= 20 else f"{t:.1f}s {loss:.3f}")
    return ", ".join(parts)
