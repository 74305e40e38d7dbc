"""`evolve runs`: one row per run under an archive directory, with a status read off the disk.

The status never takes the lock. A run is
  running   while a live process holds its writer lock (seen in /proc/locks),
  finished  when nothing is pending and its generation or time limit was reached,
  stopped   when it was stopped cleanly (Ctrl-C: its in-flight work was marked
            interrupted after its last record) or ran without a limit,
  crashed   when work is pending that nobody marked interrupted (kill -9, power loss).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evolve.archive import RunArchive, list_runs
from evolve.archive.elites import best_elite
from evolve.archive.pending import PendingTasks
from evolve.browse.testsplit import test_records, test_view
from evolve.errors import UserError
from evolve.operators.llm.summary import read_stats
from evolve.record import Evaluation

SLACK = 1.0  # seconds: an interrupt recorded this close to the last record still counts as after it


def lock_holder(run_dir: Path) -> int | None:
    """The pid holding the run's writer lock, or None; reads /proc/locks, never locks."""
    lock = run_dir / "lock"
    try:
        st = os.stat(lock)
    except FileNotFoundError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _pid_in_file_if_alive(lock)
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue  # "->" marks a process waiting for a lock, not holding one
        if parts[5] == key:
            return int(parts[4])
    return None


def _pid_in_file_if_alive(lock: Path) -> int | None:
    """Fallback without /proc/locks: the pid written in the lock file, if that process lives."""
    try:
        pid = int(lock.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, OSError):
        return None
    return pid


def stored_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What makes scores comparable between runs: budget, data, device, eval tokens."""
    run = config.get("config") or {}
    fingerprint = config.get("fingerprint") or {}
    return {
        "budget": run.get("budget"),
        "eval_tokens": run.get("eval_tokens"),
        "dataset_fingerprint": fingerprint.get("dataset_fingerprint"),
        "device": fingerprint.get("device"),
    }


def _last_record(archive: RunArchive) -> Evaluation | None:
    shards = archive.shards.shards()
    if not shards:
        return None
    records = archive.shards.read_shard(shards[-1])
    return Evaluation.from_dict(records[max(records)]) if records else None


def run_status(archive: RunArchive) -> str:
    if lock_holder(archive.path) is not None:
        return "running"
    run = archive.config.get("config") or {}
    last = _last_record(archive)
    pending = PendingTasks(archive.path).all()
    if pending:
        interrupted = [
            a.get("at", 0.0)
            for t in pending
            for a in t.attempts
            if a.get("status") == "interrupted"
        ]
        last_write = last.created if last else 0.0
        return "stopped" if interrupted and max(interrupted) >= last_write - SLACK else "crashed"
    gens = [int(row["gen"]) for row in archive.logbook()]
    if last is not None:
        gens.append(int(last.generation or 0))
    if run.get("generations") and gens and max(gens) >= int(run["generations"]) - 1:
        return "finished"
    started = started_at(archive)
    if (
        run.get("time_limit")
        and last
        and started
        and (last.created - started >= float(run["time_limit"]))
    ):
        return "finished"
    return "stopped"


def started_at(archive: RunArchive) -> float | None:
    created = archive.config.get("created")
    if isinstance(created, (int, float)):
        return float(created)
    try:
        return (archive.path / "config.json").stat().st_mtime
    except OSError:
        return None


def run_row(archive: RunArchive) -> dict[str, Any]:
    """One run's line of `evolve runs`, as plain data."""
    run = archive.config.get("config") or {}
    settings = stored_settings(archive.config)
    elites = archive.elites()
    best = best_elite(elites, archive.rule.confirm_n)
    gens = [int(row["gen"]) for row in archive.logbook()]
    test = None
    if best is not None:
        test = test_view(test_records(archive, [best.genome]).get(best.genome), best, archive.rule)
    return {
        "name": archive.name,
        "path": str(archive.path),
        "status": run_status(archive),
        "generations": (max(gens) + 1) if gens else 0,
        "planned_generations": run.get("generations"),
        "evaluations": archive.count(),
        "best": None
        if best is None
        else {
            "mean": best.mean,
            "std": best.std,
            "n": best.n,
            "confirmed": best.n >= archive.rule.confirm_n,
            "test": test,
        },
        "coverage": len(elites) / archive.grid.total_cells,
        "elites": len(elites),
        "started": started_at(archive),
        "budget": settings["budget"],
        "device": settings["device"],
        "llm": llm_row(archive.path),
        "error": None,
    }


def llm_row(run_dir: Path) -> dict[str, Any] | None:
    """The LLM's account of a run (None: it used no LLM): calls, failures by kind, spend."""
    stats = read_stats(run_dir)
    if stats is None:
        return None
    keys = (
        "calls",
        "failures",
        "errors",
        "rejected",
        "cost",
        "max_cost",
        "tokens",
        "abandoned",
        "outages",
        "stopped",
    )
    return {key: stats.get(key) for key in keys}


def run_rows(archive_dir: str | Path) -> list[dict[str, Any]]:
    """Every run under `archive_dir`; unreadable ones are listed with their error."""
    rows = []
    for info in list_runs(archive_dir):
        if info.config is None:
            rows.append(
                {
                    "name": info.name,
                    "path": str(info.path),
                    "status": "unreadable",
                    "error": info.error,
                }
            )
            continue
        try:
            with RunArchive.open(info.path) as archive:
                rows.append(run_row(archive))
        except UserError as exc:  # one broken run must not hide the others
            rows.append(
                {
                    "name": info.name,
                    "path": str(info.path),
                    "status": "unreadable",
                    "error": exc.message(),
                }
            )
    return rows
