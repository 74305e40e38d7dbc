"""Rich tables for the browsing commands; the same rows go out as JSON with --json.

Every cell is a rich Text made with `cell`: ideas, operators, run names and
reasons come from genomes, LLMs or other people's archives, so their escape
sequences are made visible and `[bold]`-style markup prints literally (a plain
str cell would be parsed as rich markup, links included).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from evolve.browse.testsplit import OVERFIT_NOTE, test_text
from evolve.operators.llm.summary import short
from evolve.textsafe import printable

PIPE_WIDTH = 200  # columns when stdout is not a terminal: keep whole rows for grep and less


def console() -> Console:
    """A console for stdout: terminal width on a terminal, wide and colourless in a pipe."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH, highlight=False)


def cell(value: Any, style: str = "") -> Text:
    """A table cell that shows `value` as it is: no markup, no escape sequences."""
    return Text(printable("" if value is None else str(value)), style=style)


def _bpb(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


STATUS_STYLE = {
    "running": "bold green",
    "finished": "blue",
    "stopped": "yellow",
    "crashed": "bold red",
    "unreadable": "red",
}


def runs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="runs")
    for name, justify in (
        ("run", "left"),
        ("status", "left"),
        ("gens", "right"),
        ("evals", "right"),
        ("best val_bpb", "right"),
        ("test", "right"),
        ("coverage", "right"),
        ("started", "left"),
        ("budget", "right"),
        ("device", "left"),
        ("LLM", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        status = cell(r["status"], style=STATUS_STYLE.get(r["status"], ""))
        if r.get("error"):
            table.add_row(
                cell(r["name"]),
                status,
                "",
                "",
                cell(r["error"].splitlines()[0]),
                "",
                "",
                "",
                "",
                "",
                "",
            )
            continue
        best = r["best"]
        best_text = (
            "-"
            if best is None
            else (
                f"{_bpb(best['mean'], best['std'])} (n={best['n']})"
                + ("" if best["confirmed"] else " *")
            )
        )
        planned = f"/{r['planned_generations']}" if r.get("planned_generations") else ""
        budget = "-" if r["budget"] is None else f"{r['budget']:g} s"
        table.add_row(
            cell(r["name"]),
            status,
            f"{r['generations']}{planned}",
            str(r["evaluations"]),
            best_text,
            cell(test_text((best or {}).get("test"))),
            f"{r['coverage']:.1%}",
            _when(r["started"]),
            budget,
            cell(r["device"] or "-"),
            cell(short(r["llm"])) if r.get("llm") else "-",
        )
    notes = []
    if any(r.get("best") and not r["best"]["confirmed"] for r in rows):
        notes.append("* unconfirmed: the best has fewer evaluations than the run's confirm count")
    if any(((r.get("best") or {}).get("test") or {}).get("overfit") for r in rows):
        notes.append(OVERFIT_NOTE)
    table.caption = Text("\n".join(notes)) if notes else None
    return table


def elites_table(name: str, rows: list[dict[str, Any]], caption: str | None = None) -> Table:
    """`caption`: a line under the table (the run's LLM account)."""
    table = Table(title=cell(f"elites of {name}, best first"))
    for col, justify in (
        ("id", "left"),
        ("cell", "left"),
        ("val_bpb", "right"),
        ("n", "right"),
        ("test", "right"),
        ("params", "right"),
        ("lines", "right"),
        ("gen", "right"),
        ("operator", "left"),
        ("parent", "left"),
        ("idea", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold" if col == "idea" else "ellipsis")  # type: ignore[arg-type]
    for r in rows:
        origin = r.get("origin")
        parent = r["parent"] or (
            f"{origin.get('run')}:{origin.get('id')}" if isinstance(origin, dict) else "-"
        )
        table.add_row(
            cell(r["id"] + (" (best)" if r.get("best") else "")),
            ",".join(map(str, r["cell"])),
            _bpb(r["mean"], r["std"]),
            str(r["n"]),
            cell(test_text(r.get("test"))),
            "-" if r["params"] is None else f"{r['params']:,}",
            str(r["code_size"]),
            "-" if r["generation"] is None else str(r["generation"]),
            cell(r["operator"] or "-"),
            cell(parent),
            cell(r["idea"] or ""),
        )
    notes = [caption] if caption else []
    if any((r.get("test") or {}).get("overfit") for r in rows):
        notes.append(OVERFIT_NOTE)
    table.caption = cell("\n".join(notes)) if notes else None
    return table


def lineage_table(steps: list[dict[str, Any]]) -> Table:
    table = Table(title="lineage, oldest first")
    for col, justify in (
        ("run", "left"),
        ("id", "left"),
        ("gen", "right"),
        ("val_bpb", "right"),
        ("n", "right"),
        ("Δ val_bpb", "right"),
        ("operator", "left"),
        ("change", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold" if col == "change" else "ellipsis")  # type: ignore[arg-type]
    for s in steps:
        delta = s.get("delta")
        delta_text = (
            Text("-")
            if delta is None
            else Text(f"{delta:+.4f}", style="green" if delta < 0 else ("red" if delta > 0 else ""))
        )
        change = s["idea"] or ""
        if isinstance(s.get("origin"), dict):
            change = f"[imported from {s['origin'].get('run')}:{s['origin'].get('id')}] {change}"
        table.add_row(
            cell(s["run"]),
            cell(s["id"]),
            "-" if s["generation"] is None else str(s["generation"]),
            _bpb(s["mean"], s["std"]),
            str(s["n"]),
            delta_text,
            cell(s["operator"] or "-"),
            cell(change),
        )
    return table
