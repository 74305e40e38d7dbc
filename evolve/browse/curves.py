"""Training curves for people: a text plot for the terminal, a PNG for the report, and what
pruning gave back. The curves are the genomes' own reports (numbers only, checked by the
runner's channel); they are shown as such and never as a score."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from evolve.record import EvalResult, Evaluation, Status
from evolve.runner.curve import clean

HEADER = "training curve (reported by the genome; loss by training seconds, the runner's clock)"


def text_plot(raw: object, width: int = 60, height: int = 10) -> str:
    """The curve as a character plot, or "" when there is none."""
    points = clean(raw)
    if len(points) < 2:
        return ""
    t_max = max(t for t, _ in points) or 1.0
    low, high = min(v for _, v in points), max(v for _, v in points)
    span = (high - low) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for t, v in points:
        x = min(width - 1, int(t / t_max * (width - 1)))
        y = min(height - 1, int((high - v) / span * (height - 1)))
        grid[y][x] = "*"
    lines = []
    for row, chars in enumerate(grid):
        label = f"{high - span * row / (height - 1):8.4g}" if row in (0, height - 1) else " " * 8
        lines.append(f"{label} |{''.join(chars).rstrip()}")
    lines.append(" " * 9 + "+" + "-" * width)
    lines.append(" " * 10 + f"0 s{'':{max(1, width - 12)}}{t_max:.1f} s")
    return "\n".join(lines)


def describe(result: EvalResult) -> str:
    """The header, the plot, and the pruning verdict of one evaluation's result, for `log`."""
    plot = text_plot(result.curve)
    if not plot:
        return ""
    text = f"{HEADER}\n{plot}"
    verdict = result.prune
    if isinstance(verdict, dict) and verdict.get("mode") == "shadow":
        text += f"\npruning (shadow) would have stopped it at {verdict.get('stopped', '?')} s"
    return text


def pruning_summary(records: Iterable[Evaluation]) -> str:
    """'N children pruned, S s of training given back' (and shadow verdicts), or ""."""
    pruned = shadow = 0
    saved = 0.0
    for record in records:
        verdict = record.result.prune
        if record.sealed or not isinstance(verdict, dict):
            continue
        budget = float(record.result.budget or 0.0)
        stopped = float(verdict.get("stopped") or 0.0)
        if record.status == Status.PRUNED:
            pruned += 1
            saved += max(0.0, budget - stopped)
        elif verdict.get("mode") == "shadow":
            shadow += 1
    parts = []
    if pruned:
        parts.append(f"{pruned} child(ren) pruned, {saved:.0f} s of training given back")
    if shadow:
        parts.append(f"{shadow} would have been pruned (shadow)")
    return "; ".join(parts)


def curves_png(series: Sequence[tuple[str, object]], path: Path) -> bool:
    """Loss by training seconds, one line per (label, stored curve); False if none has points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [(label, clean(raw)) for label, raw in series]
    drawn = [(label, pts) for label, pts in drawn if len(pts) >= 2]
    if not drawn:
        return False
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    for label, pts in drawn:
        ax.plot([t for t, _ in pts], [v for _, v in pts], label=label, linewidth=1.2)
    values = [v for _, pts in drawn for _, v in pts if math.isfinite(v)]
    if values and max(values) > 20 * max(min(values), 1e-9):
        ax.set_yscale("log")
    ax.set_xlabel("training seconds (runner's clock)")
    ax.set_ylabel("training loss (reported)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
