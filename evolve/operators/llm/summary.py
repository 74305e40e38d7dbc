"""The LLM's account in words, for the end of a run, `evolve runs` and `evolve show`.

Read from the run's `llm.json` (or the live totals), so a run whose LLM never
answered says so in one line instead of leaving it to a counter in a progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evolve.archive.atomic import read_json
from evolve.errors import UserError

STATS_FILE = "llm.json"


def read_stats(run_dir: Path) -> dict[str, Any] | None:
    """The stored LLM totals of a run, or None when it has none (no LLM, or unreadable)."""
    try:
        stats = read_json(run_dir / STATS_FILE)
    except (OSError, UserError):  # missing or corrupt: the listing shows the run without it
        return None
    return stats if isinstance(stats, dict) else None


def answered(stats: dict[str, Any]) -> int:
    """Calls that came back with a reply (usable or not)."""
    return max(
        0,
        int(stats.get("calls", 0)) - int(stats.get("failures", 0)) - int(stats.get("abandoned", 0)),
    )


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _down(stats: dict[str, Any]) -> bool:
    """Live totals say so; stored ones by their last event."""
    if "down" in stats:
        return bool(stats["down"])
    events = stats.get("events") or []
    return bool(events) and str(events[-1].get("what", "")).startswith("LLM down")


def short(stats: dict[str, Any]) -> str:
    """A table cell: calls, failures, spend."""
    return (
        f"{stats.get('calls', 0)} calls, {stats.get('failures', 0)} failed, "
        f"${float(stats.get('cost', 0.0)):.2f}"
    )


def describe(stats: dict[str, Any]) -> str:
    """One line: calls, failures by kind, refused replies by kind, spend, outages, the cap."""
    calls, failures = int(stats.get("calls", 0)), int(stats.get("failures", 0))
    parts = [f"{calls} call(s)"]
    errors = stats.get("errors") or {}
    parts.append(
        f"{failures} failed ({_kinds(errors)})" if failures and errors else f"{failures} failed"
    )
    rejected = stats.get("rejected") or {}
    if rejected:
        parts.append(f"{sum(rejected.values())} repl(ies) refused ({_kinds(rejected)})")
    cap = stats.get("max_cost")
    parts.append(f"spent ${float(stats.get('cost', 0.0)):.4f}" + (f" of ${cap:g}" if cap else ""))
    if stats.get("abandoned"):
        parts.append(f"{stats['abandoned']} abandoned at a stop")
    if stats.get("outages"):
        parts.append(f"down {stats['outages']} time(s)" + (", still down" if _down(stats) else ""))
    line = "LLM: " + ", ".join(parts)
    if calls and not answered(stats):
        line += "; the LLM never answered"
    if stats.get("stopped"):
        line += f"; {stats['stopped']}"
    return line
