"""Chart geometry for the viewer's inline SVG: the progress plot, the grid heatmap, a log curve.

Computed here as plain numbers and drawn by the templates, so the page needs no
plotting library, no network and no script; Jinja escapes every label.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from evolve.browse.gridview import GridView, bin_labels
from evolve.browse.server.index import Series

MAX_GREY = 2500  # discarded points drawn at most; the rest are thinned evenly
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 900, 320, 60, 20, 16, 40


@dataclass
class Axes:
    """Linear map of data to pixels, with tick marks."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = WIDTH
    height: int = HEIGHT

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return round(LEFT + (v - self.x0) / span * (self.width - LEFT - RIGHT), 1)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        v = min(max(v, self.y0), self.y1)
        return round(self.height - BOTTOM - (v - self.y0) / span * (self.height - TOP - BOTTOM), 1)

    def xticks(self) -> list[tuple[float, str]]:
        return [(self.x(t), f"{t:g}") for t in nice_ticks(self.x0, self.x1)]

    def xs(self, values: np.ndarray) -> list[float]:
        span = (self.x1 - self.x0) or 1.0
        return np.round(LEFT + (values - self.x0) / span * (self.width - LEFT - RIGHT), 1).tolist()

    def ys(self, values: np.ndarray) -> list[float]:
        span = (self.y1 - self.y0) or 1.0
        clipped = np.clip(values, self.y0, self.y1)
        return np.round(
            self.height - BOTTOM - (clipped - self.y0) / span * (self.height - TOP - BOTTOM), 1
        ).tolist()

    def yticks(self) -> list[tuple[float, str]]:
        return [(self.y(t), f"{t:.3g}") for t in nice_ticks(self.y0, self.y1)]

    @property
    def bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def right(self) -> int:
        return self.width - RIGHT


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


@dataclass
class Progress:
    axes: Axes
    grey: str = ""  # SVG path of dots (one element however many points)
    kept: str = ""  # SVG path of dots: evaluations that took a cell
    records: list[tuple[float, float, str]] = field(default_factory=list)  # running-best steps
    elites: str = ""  # SVG path of rings around the current elites' evaluations
    failed: str = ""  # SVG path of ticks on the top edge
    best: str = ""  # SVG path of the running best
    total: int = 0
    shown_grey: int = 0
    grey_total: int = 0
    clipped: int = 0
    failures: int = 0


def progress(series: Series, elite_numbers: set[int]) -> Progress:
    """autoresearch's progress plot: every evaluation in order, what took a cell, the running best.

    The y range ends a little above the 95th percentile, so a few untrained or broken
    models do not flatten the rest; points above it sit on the top edge. Discarded and
    failed evaluations are thinned evenly to MAX_GREY points each.
    """
    bpb, took = series.bpb, series.took
    total = len(bpb)
    ok = ~np.isnan(bpb)
    if ok.any():
        low, q95 = float(np.min(bpb[ok])), float(np.quantile(bpb[ok], 0.95))
        high = q95 + 0.15 * ((q95 - low) or 0.05)
        low -= 0.05 * ((high - low) or 0.05)
    else:
        low, high = 0.0, 1.0
    axes = Axes(1, max(2, total), low, high)
    chart = Progress(axes, total=total)
    xs = np.arange(1, total + 1)
    grey = np.flatnonzero(ok & ~took)
    chart.grey_total = len(grey)
    shown = grey[:: max(1, math.ceil(len(grey) / MAX_GREY))]
    chart.grey = dots(axes.xs(xs[shown]), axes.ys(bpb[shown]))
    chart.shown_grey = len(shown)
    failed = np.flatnonzero(~ok)
    chart.failed = "".join(
        f"M{x},{TOP - 10}v8"
        for x in axes.xs(xs[failed[:: max(1, math.ceil(len(failed) / MAX_GREY))]])
    )
    chart.failures = len(failed)
    chart.clipped = int(np.count_nonzero(bpb[ok] > high))
    kept = np.flatnonzero(ok & took)
    drawn = kept[:: max(1, math.ceil(len(kept) / MAX_GREY))]
    chart.kept = dots(axes.xs(xs[drawn]), axes.ys(bpb[drawn]))
    ringed = np.flatnonzero(np.isin(series.numbers, list(elite_numbers)) & ok)
    chart.elites = "".join(
        f"M{x - 6},{y}a6,6 0 1,0 12,0a6,6 0 1,0 -12,0"
        for x, y in zip(axes.xs(xs[ringed]), axes.ys(bpb[ringed]), strict=True)
    )
    if len(kept):
        best = np.minimum.accumulate(bpb[kept])
        steps = kept[np.flatnonzero(np.r_[True, best[1:] < best[:-1]])]
        px, py = axes.xs(xs[steps]), axes.ys(bpb[steps])
        parts = [f"M{px[0]},{py[0]}"] + [f"H{x}V{y}" for x, y in zip(px[1:], py[1:], strict=True)]
        chart.best = "".join(parts) + f"H{axes.x(total)}"
        chart.records = list(zip(px, py, [f"e{n:06d}" for n in series.numbers[steps]], strict=True))
    return chart


def dots(xs: list[float], ys: list[float]) -> str:
    """Points as one SVG path of zero-length segments, drawn as dots by round line caps."""
    return "".join(f"M{x},{y}h0" for x, y in zip(xs, ys, strict=True))


# --- the grid heatmap --------------------------------------------------------------------------

GREEN, YELLOW, RED = (26, 152, 80), (254, 224, 139), (215, 48, 39)


def colour(t: float) -> str:
    """Green (t=0, best) through yellow to red (t=1, worst)."""
    t = min(max(t, 0.0), 1.0)
    a, b, u = (GREEN, YELLOW, t * 2) if t < 0.5 else (YELLOW, RED, t * 2 - 1)
    return "#" + "".join(f"{round(p + (q - p) * u):02x}" for p, q in zip(a, b, strict=True))


@dataclass
class Cell:
    x: float
    y: float
    w: float
    h: float
    fill: str
    label: str
    href_id: str
    title: str
    cell: str
    dark: bool


@dataclass
class Heatmap:
    width: int
    height: int
    left: int
    top: int
    cell_w: float
    cell_h: float
    cells: list[Cell]
    xlabels: list[tuple[float, str]]
    ylabels: list[tuple[float, str]]
    xname: str
    yname: str
    note: str
    legend: list[tuple[float, str]]
    legend_low: str
    legend_high: str
    empty: list[tuple[float, float]]


def heatmap(view: GridView, first_id: dict[str, str]) -> Heatmap:
    """Cells of the first two descriptors, coloured by their elite's mean val_bpb; each links to
    its elite's page."""
    cols, rows = view.x.bins, view.rows
    cell_w = max(14.0, min(64.0, 760 / cols))
    cell_h = max(14.0, min(34.0, 420 / rows))
    left, top = 90, 10
    width = int(left + cols * cell_w + 20)
    height = int(top + rows * cell_h + 90)
    means = [e.mean for e in view.cells.values()]
    low, high = (min(means), max(means)) if means else (0.0, 1.0)
    span = (high - low) or 1.0
    cells = []
    for (col, row), elite in sorted(view.cells.items()):
        t = (elite.mean - low) / span
        ident = first_id.get(elite.genome, elite.eval_ids[0])
        cells.append(
            Cell(
                x=left + col * cell_w,
                y=top + (rows - 1 - row) * cell_h,
                w=cell_w - 1,
                h=cell_h - 1,
                fill=colour(t),
                label=f"{elite.mean:.3f}" if cell_w >= 40 and cell_h >= 16 else "",
                href_id=ident,
                cell=",".join(map(str, elite.cell)),
                dark=0.2 < t < 0.8,
                title=f"{ident}  cell {tuple(elite.cell)}  val_bpb {elite.mean:.4f} ± {elite.std:.4f}"
                f" (n={elite.n})",
            )
        )
    filled = set(view.cells)
    empty = [
        (left + c * cell_w, top + (rows - 1 - r) * cell_h)
        for c in range(cols)
        for r in range(rows)
        if (c, r) not in filled
    ]
    xl = bin_labels(view.x)
    xlabels = [(left + (i + 0.5) * cell_w, xl[i]) for i in range(cols)]
    ylabels = []
    if view.y is not None:
        yl = bin_labels(view.y)
        ylabels = [(top + (rows - 1 - i + 0.5) * cell_h, yl[i]) for i in range(rows)]
    legend = [(i * 12.0, colour(i / 19)) for i in range(20)]
    return Heatmap(
        width,
        height,
        left,
        top,
        cell_w,
        cell_h,
        cells,
        xlabels,
        ylabels,
        view.x.name,
        view.y.name if view.y is not None else "",
        view.note,
        legend,
        f"{low:.3f}",
        f"{high:.3f}",
        empty,
    )


# --- a training log's loss curve ---------------------------------------------------------------

STEP = re.compile(r"\bstep[\s=:]+(\d+)")
LOSS = re.compile(r"\bloss[\s=:]+([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
MAX_CURVE = 2000


@dataclass
class Curve:
    axes: Axes
    path: str
    points: int


def log_curve(text: str) -> Curve | None:
    """The loss of each logged step (lines with `step N` and `loss X`), for humans only: the
    log is written by the genome, so this is what it says, not a measurement."""
    points: list[tuple[int, float]] = []
    for line in text.splitlines():
        step, loss = STEP.search(line), LOSS.search(line)
        if step and loss:
            value = float(loss.group(1))
            if math.isfinite(value):
                points.append((int(step.group(1)), value))
    if len(points) < 2:
        return None
    points = points[:: max(1, math.ceil(len(points) / MAX_CURVE))]
    xs, ys = [p[0] for p in points], sorted(p[1] for p in points)
    low, high = ys[0], ys[int(0.98 * (len(ys) - 1))]
    axes = Axes(min(xs), max(xs), low, high + 0.05 * ((high - low) or 1.0), height=220)
    path = "M" + "L".join(f"{axes.x(x)},{axes.y(y)}" for x, y in points)
    return Curve(axes, path, len(points))
