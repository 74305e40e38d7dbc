"""The report's pictures, drawn with matplotlib's Agg backend (no display needed).

progress.png follows autoresearch's progress plot: every evaluation in order,
the ones that changed nothing grey, the ones that took a cell coloured, current
elites ringed, and the best as `evolve show` picks it (confirmed means first) as a step line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from evolve.archive import Elite  # noqa: E402
from evolve.browse.gridview import GridView, bin_labels  # noqa: E402
from evolve.record import Evaluation  # noqa: E402

TOOK_CELL = ("new_cell", "replaced")


def progress_png(
    records: Sequence[Evaluation],
    elites: Sequence[Elite],
    best_steps: Sequence[tuple[int, float]],
    path: Path,
) -> None:
    """Scatter of val_bpb per evaluation and the best's mean as a step line (`best_steps`:
    (evaluation number, mean) where it changed, from `queries.running_best`), saved to `path`."""
    elite_ids = {i for e in elites for i in e.eval_ids}
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    grey, kept, ringed, failed = [], [], [], []
    for x, r in enumerate(records, start=1):
        bpb = r.val_bpb
        if bpb is None:
            failed.append(x)
            continue
        (kept if r.decision in TOOK_CELL else grey).append((x, bpb))
        if r.id in elite_ids:
            ringed.append((x, bpb))
    if grey:
        ax.scatter(*zip(*grey, strict=True), s=10, c="#b0b0b0", label="discarded", zorder=2)
    if kept:
        ax.scatter(*zip(*kept, strict=True), s=22, c="#2ca02c", label="took a cell", zorder=3)
    if ringed:
        ax.scatter(
            *zip(*ringed, strict=True),
            s=70,
            facecolors="none",
            edgecolors="#1f77b4",
            linewidths=1.3,
            label="current elite",
            zorder=4,
        )
    if best_steps:
        xs, ys = zip(*best_steps, strict=True)
        ax.step(
            [*xs, len(records)],
            [*ys, ys[-1]],
            where="post",
            c="#d62728",
            lw=1.6,
            label="best (mean, as evolve show)",
            zorder=5,
        )
    if failed:
        top = ax.get_ylim()[1] if (grey or kept) else 1.0
        ax.scatter(
            failed,
            [top] * len(failed),
            marker="x",
            s=14,
            c="#d62728",
            alpha=0.6,
            label=f"failed ({len(failed)})",
            zorder=2,
            clip_on=False,
        )
    ax.set_xlabel("evaluation")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(f"{len(records)} evaluations, {len(elites)} elites")
    ax.grid(alpha=0.3)
    if records:
        ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def heatmap_png(view: GridView, path: Path) -> None:
    """The grid's elites' mean val_bpb over the first two descriptors, saved to `path`."""
    values = np.full((view.rows, view.x.bins), np.nan)
    for (col, row), elite in view.cells.items():
        values[row, col] = elite.mean
    width = min(14.0, 3 + 0.8 * view.x.bins)
    fig, ax = plt.subplots(figsize=(width, min(10.0, 2 + 0.5 * view.rows)), dpi=100)
    ax.set_facecolor("#f2f2f2")  # empty cells
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", cmap="RdYlGn_r", aspect="auto")
    fig.colorbar(image, ax=ax, label="val_bpb (lower is better)")
    ax.set_xticks(range(view.x.bins), bin_labels(view.x), rotation=45, ha="right", fontsize=7)
    ax.set_xlabel(view.x.name)
    if view.y is not None:
        ax.set_yticks(range(view.rows), bin_labels(view.y), fontsize=7)
        ax.set_ylabel(view.y.name)
    else:
        ax.set_yticks([])
    if view.rows * view.x.bins <= 400:
        for (col, row), elite in view.cells.items():
            ax.text(col, row, f"{elite.mean:.3f}", ha="center", va="center", fontsize=6)
    ax.set_title("MAP-Elites grid" + (f"\n{view.note}" if view.note else ""), fontsize=9)
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
