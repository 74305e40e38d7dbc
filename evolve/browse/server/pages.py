"""What each page of the viewer shows, as plain data for the templates (which escape it all).

Everything is read from a RunIndex (slim rows kept current) plus the few files a
page needs in full (one record, one genome source, one log tail, one prompt), so a
page costs about the same at 100 and at 100,000 evaluations.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass
from typing import Any

from evolve.archive.atomic import read_json
from evolve.archive.elites import best_elite
from evolve.archive.pending import PendingTasks, Task
from evolve.browse.gridview import grid_view
from evolve.browse.locate import EVAL_ID, HASH_PREFIX, known_genomes
from evolve.browse.runs import lock_holder, run_status, started_at, stored_settings
from evolve.browse.server import charts
from evolve.browse.server.index import NotFound, Row, RunIndex, stat_key
from evolve.errors import UserError
from evolve.logtail import tail

PAGE_SIZE = 50
LINEAGE_STEPS = 40  # ancestors shown; older ones behind a link
CHILDREN = 40
EVALUATIONS = 60  # of one genome, listed on its page
LOG_BYTES = 256 * 1024
TEXT_BYTES = 512 * 1024  # prompts and replies longer than this are cut (and say so)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise NotFound(f"{name!r} is not a run name")
    return name


def llm_spend(index: RunIndex) -> dict[str, Any] | None:
    try:
        data = read_json(index.path / "llm.json")
    except (FileNotFoundError, UserError):
        return None
    return data if isinstance(data, dict) else None


def version(index: RunIndex, log_id: str | None = None) -> str:
    """Changes whenever anything a page shows may have changed; costs a handful of stats."""
    path = index.path
    shards = index.archive.shards.shards()
    parts: list[Any] = [
        len(shards),
        stat_key(index.archive.shards.path(shards[-1])) if shards else None,
    ]
    for name in ("elites.json", "generations.json", "llm.json", "pending"):
        parts.append(stat_key(path / name))
    parts.append(lock_holder(path))  # a writer killed with -9 changes no file
    if log_id is not None:
        parts.append(stat_key(index.archive.log_path(log_id)))
    return str(abs(hash(tuple(parts))))


# --- every run ----------------------------------------------------------------------------------


def run_summary(index: RunIndex) -> dict[str, Any]:
    archive = index.archive
    run = archive.config.get("config") or {}
    settings = stored_settings(archive.config)
    elites = archive.elites()
    best = best_elite(elites, archive.rule.confirm_n)
    gens = [int(row["gen"]) for row in archive.logbook()]
    spend = llm_spend(index)
    return {
        "name": index.name,
        "status": run_status(archive),
        "generations": (max(gens) + 1) if gens else 0,
        "planned": run.get("generations"),
        "evaluations": len(index.rows),
        "elites": len(elites),
        "cells": archive.grid.total_cells,
        "coverage": len(elites) / archive.grid.total_cells,
        "best": best,
        "confirmed": best is not None and best.n >= archive.rule.confirm_n,
        "started": _when(started_at(archive)),
        "budget": settings["budget"],
        "device": settings["device"],
        "llm": spend,
        "error": None,
    }


def runs_page(cache: Any) -> list[dict[str, Any]]:
    from evolve.archive.layout import list_runs

    rows = []
    for info in list_runs(cache.archive_dir):
        if info.config is None:
            rows.append({"name": info.name, "status": "unreadable", "error": info.error})
            continue
        try:
            index = cache.get(info.name)
            with index.lock:
                index.refresh()
                rows.append(run_summary(index))
        except UserError as exc:  # one broken run must not hide the others
            rows.append({"name": info.name, "status": "unreadable", "error": exc.message()})
    return rows


# --- one run ------------------------------------------------------------------------------------

SORTS = {
    "mean": lambda r: r["mean"],
    "std": lambda r: r["std"],
    "n": lambda r: r["n"],
    "params": lambda r: r["params"] or 0,
    "lines": lambda r: r["code_lines"] or 0,
    "gen": lambda r: r["generation"] or 0,
    "id": lambda r: r["id"],
    "cell": lambda r: r["cell"],
    "operator": lambda r: r["operator"],
}


def run_page(
    index: RunIndex, sort: str = "mean", order: str = "asc", page: int = 1
) -> dict[str, Any]:
    archive = index.archive
    summary = run_summary(index)
    elites = archive.elites()
    first = {
        e.genome: (index.first(e.genome).id if index.first(e.genome) else e.eval_ids[0])
        for e in elites
    }
    elite_numbers = {int(e.eval_ids[0][1:]) for e in elites}  # ringed in the progress plot
    table = []
    for e in elites:
        intro = index.first(e.genome)
        table.append(
            {
                "id": first[e.genome],
                "genome": e.genome,
                "cell": tuple(e.cell),
                "mean": e.mean,
                "std": e.std,
                "n": e.n,
                "params": intro.params if intro else None,
                "code_lines": index.code_lines(e.genome),
                "generation": intro.generation if intro else None,
                "operator": intro.operator if intro else "",
                "idea": intro.idea if intro else "",
                "parent": _first_id(index, intro.parent) if intro and intro.parent else None,
                "origin": intro.origin if intro else None,
            }
        )
    sort = sort if sort in SORTS else "mean"
    order = "desc" if order == "desc" else "asc"
    table.sort(key=SORTS[sort], reverse=order == "desc")
    pages = max(1, -(-len(table) // PAGE_SIZE))
    page = min(max(1, page), pages)
    fingerprint = archive.config.get("fingerprint") or {}
    settings = stored_settings(archive.config)
    return {
        "summary": summary,
        "statuses": index.statuses.most_common(),
        "operators": index.operators.most_common(),
        "noise": archive.rule.noise_std,
        "z": archive.rule.z,
        "confirm": archive.rule.confirm_n,
        "qd": archive.summary()["qd_score"],
        "settings": settings,
        "dataset": fingerprint.get("dataset"),
        "descriptors": [
            f"{d.name} [{d.low:g}, {d.high:g}) × {d.bins}" for d in archive.grid.descriptors
        ],
        "progress": charts.progress(index.series(), elite_numbers),
        "heatmap": charts.heatmap(grid_view(archive.grid, elites), first),
        "elites": table[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "elite_count": len(table),
        "sort": sort,
        "order": order,
        "page": page,
        "pages": pages,
        "pending": PendingTasks(archive.path).all(),
    }


def _first_id(index: RunIndex, genome: str | None) -> str | None:
    row = index.first(genome) if genome else None
    return row.id if row else None


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


# --- one genome ---------------------------------------------------------------------------------


@dataclass
class Subject:
    """What an id in a URL names: a genome, and the evaluation (row) or pending task meant."""

    genome: str
    row: Row | None = None
    task: Task | None = None

    @property
    def id(self) -> str:
        if self.row is not None:
            return self.row.id
        return self.task.id if self.task is not None else self.genome[:12]


def subject(index: RunIndex, ident: str) -> Subject:
    """An evaluation id (finished or pending) or a genome hash prefix; anything else is 404."""
    if EVAL_ID.fullmatch(ident):
        row = index.rows.get(int(ident[1:]))
        if row is not None:
            return Subject(row.genome, row)
        task = next((t for t in PendingTasks(index.path).all() if t.id == ident), None)
        if task is not None:
            return Subject(task.genome, None, task)
        raise NotFound(f"no evaluation {ident} in run {index.name}")
    prefix = ident.lower()
    if not HASH_PREFIX.fullmatch(prefix):
        raise NotFound(f"{ident!r} is not an evaluation id or a genome hash")
    matches = sorted(g for g in index.by_genome if g.startswith(prefix))
    if not matches:
        matches = sorted(g for g in known_genomes(index.archive) if g.startswith(prefix))
    if len(matches) != 1:
        raise NotFound(f"genome prefix {prefix} names {len(matches)} genomes in run {index.name}")
    return Subject(
        matches[0],
        index.first(matches[0]),
        None if index.first(matches[0]) else _task_of(index, matches[0]),
    )


def _task_of(index: RunIndex, genome: str) -> Task | None:
    return next((t for t in PendingTasks(index.path).all() if t.genome == genome), None)


def _parent(index: RunIndex, s: Subject) -> str | None:
    if s.row is not None:
        intro = index.first(s.genome)
        return intro.parent if intro else s.row.parent
    parents = [p for p in (s.task.parents if s.task else []) if p != s.genome]
    return parents[0] if parents else None


def lineage(index: RunIndex, s: Subject, limit: int = LINEAGE_STEPS) -> dict[str, Any]:
    """Ancestors oldest first (the newest `limit` of them), the genome, and its children, each
    with its statistics and the change of mean val_bpb against its parent."""
    chain: list[str] = [s.genome]
    parent = _parent(index, s)
    while parent and parent not in chain and len(chain) <= limit + 1:
        chain.append(parent)
        intro = index.first(parent)
        parent = intro.parent if intro else None
    more = len(chain) > limit + 1
    chain = chain[: limit + 1]
    chain.reverse()
    steps = []
    for g in chain:
        steps.append(_step(index, g))
    for before, step in zip([None, *steps], steps, strict=False):
        step["delta"] = (
            step["mean"] - before["mean"]
            if before and before["mean"] is not None and step["mean"] is not None
            else None
        )
    here = steps[-1]
    kids = [_step(index, g) for g in index.children.get(s.genome, [])[:CHILDREN]]
    for kid in kids:
        kid["delta"] = (
            kid["mean"] - here["mean"]
            if kid["mean"] is not None and here["mean"] is not None
            else None
        )
    root = index.first(chain[0])
    return {
        "steps": steps,
        "more": more,
        "children": kids,
        "children_total": len(index.children.get(s.genome, [])),
        "origin": root.origin if root else None,
    }


def _step(index: RunIndex, genome: str) -> dict[str, Any]:
    intro = index.first(genome)
    stats = index.stats(genome)
    return {
        "genome": genome,
        "id": intro.id if intro else genome[:12],
        "generation": intro.generation if intro else None,
        "operator": intro.operator if intro else "",
        "idea": intro.idea if intro else "",
        "n": stats.n,
        "mean": stats.mean if stats.n else None,
        "std": stats.std if stats.n else None,
        "status": intro.status if intro else "pending",
    }


def source_of(index: RunIndex, genome: str) -> str:
    try:
        return index.archive.genome_source(genome)
    except UserError:
        raise NotFound(f"genome {genome[:12]} is not stored in run {index.name}") from None


def diff_lines(index: RunIndex, old: Subject, new: Subject) -> str:
    return "".join(
        difflib.unified_diff(
            source_of(index, old.genome).splitlines(keepends=True),
            source_of(index, new.genome).splitlines(keepends=True),
            fromfile=f"{old.id} ({old.genome[:12]})",
            tofile=f"{new.id} ({new.genome[:12]})",
        )
    )


def text_of(index: RunIndex, sha: Any) -> tuple[str, bool] | None:
    """A stored prompt or reply (cut to TEXT_BYTES) and whether it was cut."""
    if not isinstance(sha, str):
        return None
    try:
        text = index.archive.text(sha)
    except UserError:
        return None
    return text[:TEXT_BYTES], len(text) > TEXT_BYTES


def genome_page(index: RunIndex, ident: str, against: str | None = None) -> dict[str, Any]:
    s = subject(index, ident)
    record = index.archive.get(s.row.id) if s.row is not None else None
    result = record.result if record is not None else {}
    parent = _parent(index, s)
    base: Subject | None = None
    if against:
        base = subject(index, against)
    elif parent and (index.first(parent) or parent in known_genomes(index.archive)):
        base = Subject(parent, index.first(parent))
    diff = diff_lines(index, base, s) if base is not None else None
    log_text, cut = ("", 0)
    log_id = s.id if (s.row is not None or s.task is not None) else None
    if log_id is not None:
        log_text, cut = tail(index.archive.log_path(log_id), LOG_BYTES)
    meta = s.task.meta if s.task is not None else {}
    prompt = text_of(index, record.prompt_sha256) if record else _inline(meta.get("prompt"))
    reply = text_of(index, record.response_sha256) if record else _inline(meta.get("response"))
    stats = index.stats(s.genome)
    evaluations = [
        {"id": r.id, "status": r.status, "bpb": r.bpb, "counted": r.counted, "operator": r.operator}
        for r in index.by_genome.get(s.genome, [])[:EVALUATIONS]
    ]
    return {
        "s": s,
        "record": record,
        "base_is_parent": base is not None and not against,
        "result": result,
        "log_id": log_id,
        "source": source_of(index, s.genome),
        "diff": diff,
        "base": base,
        "lineage": lineage(index, s),
        "log": log_text,
        "log_cut": cut,
        "curve": charts.log_curve(log_text),
        "prompt": prompt,
        "reply": reply,
        "stats": stats,
        "evaluations": evaluations,
        "evaluation_total": len(index.by_genome.get(s.genome, [])),
        "idea": record.idea if record else (s.task.idea if s.task else ""),
        "operator": record.operator if record else (s.task.operator if s.task else ""),
    }


def _inline(text: Any) -> tuple[str, bool] | None:
    return (text[:TEXT_BYTES], len(text) > TEXT_BYTES) if isinstance(text, str) else None


def compare_page(index: RunIndex, a: str, b: str) -> dict[str, Any]:
    left, right = subject(index, a), subject(index, b)
    sides = []
    for s in (left, right):
        stats = index.stats(s.genome)
        intro = index.first(s.genome)
        sides.append(
            {
                "s": s,
                "source": source_of(index, s.genome),
                "stats": stats,
                "operator": intro.operator if intro else "",
                "idea": intro.idea if intro else "",
                "params": intro.params if intro else None,
            }
        )
    return {"sides": sides, "diff": diff_lines(index, left, right)}
