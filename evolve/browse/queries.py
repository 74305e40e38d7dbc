"""What the browsing commands show, as plain data: elites, lineage, diffs, the best genome.

The CLI prints these as tables or as JSON (--json), so both views always agree.
"""

from __future__ import annotations

import difflib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from evolve.archive import Elite, RunArchive, count_code_lines
from evolve.archive.elites import Decision, ElitesMap, GenomeStats, best_elite
from evolve.archive.store import observe
from evolve.browse.locate import Target, first_ids, genome_target, known_genomes, resolve
from evolve.browse.testsplit import test_records, test_view
from evolve.errors import UserError
from evolve.record import Evaluation

MAX_LINEAGE = 10_000  # steps; a guard against a corrupted parent chain


def elite_rows(archive: RunArchive) -> list[dict[str, Any]]:
    """The elites sorted by mean val_bpb, each with where it came from and its test score
    (only a genome that was the confirmed best has one)."""
    firsts = first_ids(archive)
    elites = sorted(archive.elites(), key=lambda e: (e.mean, e.cell))
    tests = test_records(archive, [e.genome for e in elites])
    confirmed_best, confirmed = best(archive)
    rows = []
    for elite in elites:
        record = archive.get(elite.eval_ids[0])
        parents = [p for p in record.parents if p != elite.genome] if record else []
        rows.append(
            {
                "id": elite.eval_ids[0],
                "genome": elite.genome,
                "cell": list(elite.cell),
                "mean": elite.mean,
                "std": elite.std,
                "n": elite.n,
                "eval_ids": list(elite.eval_ids),
                "params": record.result.params if record else None,
                "code_size": count_code_lines(archive.genome_source(elite.genome)),
                "generation": record.generation if record else None,
                "operator": record.operator if record else "",
                "parent": (firsts.get(parents[0]) or parents[0][:12]) if parents else None,
                "parent_genome": parents[0] if parents else None,
                "idea": record.idea if record else "",
                "origin": record.origin if record else None,
                "descriptors": elite.descriptors,
                "best": confirmed and elite.genome == confirmed_best.genome,
                "test": test_view(tests.get(elite.genome), elite, archive.rule),
            }
        )
    return rows


def genome_stats(archive: RunArchive, genome: str) -> dict[str, Any]:
    """n, mean and std (ddof=1) of a genome's scores as the elite map counts them: ok, finite,
    on the val split, and measured on the run's hardware class."""
    stats = GenomeStats(genome, cell=())
    for record in archive.evaluations_of(genome):
        value = record.val_bpb
        if value is not None and record.comparable and not record.sealed:
            stats.push(value, record.id)
    if not stats.n:
        return {"n": 0, "mean": None, "std": None}
    return {"n": stats.n, "mean": stats.mean, "std": stats.std}


def lineage(archive: RunArchive, target: Target) -> list[dict[str, Any]]:
    """Ancestry from the oldest ancestor to `target`, following first parents.

    Each step carries its change (operator and idea) and delta = its mean val_bpb
    minus its parent's. An imported genome continues into the run it came from
    when that run is still on disk.
    """
    steps: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    with ExitStack() as stack:
        current: Target | None = introduction(archive, target)
        while current is not None and (archive.name, current.genome) not in seen:
            if len(steps) >= MAX_LINEAGE:
                break
            seen.add((archive.name, current.genome))
            steps.append(
                {
                    "run": archive.name,
                    "id": current.id,
                    "genome": current.genome,
                    "generation": current.field("generation"),
                    "operator": current.field("operator", ""),
                    "idea": current.field("idea", ""),
                    "origin": current.field("origin"),
                    **genome_stats(archive, current.genome),
                }
            )
            current, archive = _parent_of(archive, current, stack)
    steps.reverse()
    for before, step in zip([None, *steps], steps, strict=False):
        ok = before is not None and before["mean"] is not None and step["mean"] is not None
        step["delta"] = step["mean"] - before["mean"] if ok else None
    return steps


def _parent_of(
    archive: RunArchive, target: Target, stack: ExitStack
) -> tuple[Target | None, RunArchive]:
    parents = target.parents
    if parents and parents[0] in set(known_genomes(archive)):
        return genome_target(archive, parents[0]), archive
    origin = target.field("origin")
    if isinstance(origin, dict) and origin.get("path") and Path(origin["path"]).is_dir():
        try:
            source = stack.enter_context(RunArchive.open(origin["path"]))
            return _parent_of(source, resolve(source, origin["id"]), stack)
        except UserError:
            return None, archive  # the source run moved or changed: the lineage ends at the import
    return None, archive


def introduction(archive: RunArchive, target: Target) -> Target:
    """The evaluation that brought target's genome into the run (not a later re-evaluation)."""
    return genome_target(archive, target.genome) if target.record is not None else target


def diff_text(archive: RunArchive, a: Target, b: Target | None = None) -> str:
    """Unified diff from A to B, or from A's parent to A when B is not given."""
    if b is None:
        parents = introduction(archive, a).parents
        if not parents:
            origin = a.field("origin")
            where = (
                f" (imported from {origin.get('run')}:{origin.get('id')}; diff it there)"
                if isinstance(origin, dict)
                else ""
            )
            raise UserError(
                f"{a.id} has no parent in run {archive.name}{where}",
                "it is a seed or imported genome",
                "give a second id to compare it with",
            )
        old, new = genome_target(archive, parents[0]), a
    else:
        old, new = a, b
    return "".join(
        difflib.unified_diff(
            archive.genome_source(old.genome).splitlines(keepends=True),
            archive.genome_source(new.genome).splitlines(keepends=True),
            fromfile=f"{old.id} ({old.genome[:12]})",
            tofile=f"{new.id} ({new.genome[:12]})",
        )
    )


def best(archive: RunArchive) -> tuple[Elite | None, bool]:
    """The confirmed best (lowest mean among elites with n >= confirm), else the lowest mean.

    Returns the elite and whether it is confirmed.
    """
    confirm = archive.rule.confirm_n
    elite = best_elite(archive.elites(), confirm)
    return elite, elite is not None and elite.n >= confirm


def running_best(archive: RunArchive, records: list[Evaluation]) -> list[tuple[int, float]]:
    """(position in `records`, mean) each time the best as `best` picks it changes.

    The records are replayed into a fresh map under the run's rule, so the line follows
    confirmed means (it can rise when a lucky single score is outvoted), not single scores.
    """
    replay = ElitesMap(archive.grid.total_cells, archive.rule)
    steps: list[tuple[int, float]] = []
    for x, record in enumerate(records, start=1):
        if observe(replay, record) in (None, Decision.SEALED, Decision.OFF_CLASS):
            continue
        elite = replay.best()  # best_elite under the run's confirm count, as `best` uses
        if elite is not None and (not steps or elite.mean != steps[-1][1]):
            steps.append((x, elite.mean))
    return steps


def export_target(archive: RunArchive, ident: str | None) -> tuple[Target, str, bool]:
    """The genome `evolve export` writes, a note for the user ("" if none), and whether it has
    the run's confirm count of ok evaluations."""
    if ident is not None:
        target = resolve(archive, ident)
        return target, "", genome_stats(archive, target.genome)["n"] >= archive.rule.confirm_n
    elite, confirmed = best(archive)
    if elite is None:
        raise UserError(
            f"run {archive.name} has no elite yet",
            "no evaluation has scored yet",
            "wait for a scored evaluation, or give an id",
        )
    target = genome_target(archive, elite.genome)
    note = (
        f"the best, {target.id}: val_bpb {elite.mean:.4f} ± {elite.std:.4f} (n={elite.n})"
        if confirmed
        else f"unconfirmed: {target.id} has {elite.n} evaluation(s), fewer than the "
        f"{archive.rule.confirm_n} that confirm a best; val_bpb {elite.mean:.4f} "
        f"± {elite.std:.4f}"
    )
    return target, note, confirmed


def log_file(archive: RunArchive, target: Target, ident: str) -> Path:
    """The training log of an evaluation, or a UserError saying why there is none."""
    if target.record is None and target.task is None:
        raise UserError(
            f"genome {ident} has not been evaluated in run {archive.name}",
            fix="give the id of one of its evaluations",
        )
    path = archive.log_path(target.id)
    if not path.is_file():
        raise UserError(
            f"no log for {target.id} in run {archive.name}",
            "its evaluation has not started yet, or the log was removed",
        )
    return path
