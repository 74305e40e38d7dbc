"""`evolve start --seed-from RUN`: a new run's initial population taken from past archives.

A val_bpb is only a score under the settings it was measured with: the same
training budget, data, device and number of held-out tokens. When a source run
matches the new run on all of them, its elites' evaluations are carried over
(copied as new records with new ids, statuses and results unchanged). When any
differs, the elites are queued as "import" tasks and re-evaluated in the new run
before their scores count. Either way each imported record keeps
origin = {run, path, id, genome}, so lineage leads back to the source run.

Test-split records are never carried: the new run selects on val only and scores
its own confirmed best on the test split.

Carried-over records are re-binned: their descriptors are recomputed by the new
run's grid from the stored result and the genome source, so the new run may use
other descriptors or bin ranges than the source.
"""

from __future__ import annotations

import re
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.archive import Grid, RunArchive
from evolve.archive.pending import PendingTasks, Task
from evolve.browse.locate import genome_target, open_run, resolve
from evolve.browse.runs import stored_settings
from evolve.config import RunConfig, load_toml
from evolve.errors import UserError
from evolve.harness.data import Dataset
from evolve.record import Evaluation

_ID = r"(?:e\d{6,}|[0-9a-f]{6,64})"
SPEC = re.compile(rf"^(?P<run>.+):(?P<ids>{_ID}(?:,{_ID})*)$")
COMPARED = (
    ("budget", "training budget"),
    ("dataset_fingerprint", "dataset"),
    ("eval_tokens", "held-out tokens"),
    ("device", "device"),
)


@dataclass
class Import:
    """One genome taken from a source run, with everything needed after the source is closed."""

    run: str
    path: str
    genome: str
    source: str
    origin_id: str
    idea: str
    records: list[Evaluation]  # its val-split evaluations in the source run, in id order

    def origin(self, eval_id: str | None = None) -> dict[str, str]:
        return {
            "run": self.run,
            "path": self.path,
            "id": eval_id or self.origin_id,
            "genome": self.genome,
        }


@dataclass
class SourcePlan:
    run: str
    carry: bool  # True: evaluations carried over; False: re-evaluated in the new run
    differences: list[str]
    imports: list[Import] = field(default_factory=list)
    grid: list[dict[str, Any]] = field(default_factory=list)  # the source's descriptors and bins


@dataclass
class ImportPlan:
    sources: list[SourcePlan]
    noise_std: float | None  # the sources' measured seed noise, a prior for the new run

    @property
    def imports(self) -> list[tuple[Import, bool]]:
        return [(i, s.carry) for s in self.sources for i in s.imports]

    def stored(self) -> list[dict[str, Any]]:
        """What the new run's config.json records about its imports (read again on resume)."""
        return [
            {**i.origin(), "mode": "carried" if carry else "reevaluated"}
            for i, carry in self.imports
        ]


def without_default_seed(config_file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """--seed-from without any seed genome: the imported elites are the whole first population.

    (Otherwise the default seed, train.py, would join them.)
    """
    file = load_toml(config_file) if config_file else {}
    if (
        (flags.get("seed_from") or file.get("seed_from"))
        and not flags.get("seed_genomes")
        and "seed_genomes" not in file
    ):
        return {**flags, "seed_genomes": []}
    return flags


def plan_for(config: RunConfig, dataset: Dataset) -> ImportPlan:
    """plan_imports for a run about to start with `config` on `dataset` on this machine."""
    from evolve.runner.devices import cpu_name, cuda_names, resolve_device

    device = resolve_device(config.device)
    new = {
        "budget": config.budget,
        "eval_tokens": config.eval_tokens,
        "dataset_fingerprint": dataset.fingerprint,
        "device": device,
    }

    def names() -> set[str]:
        return set(cuda_names(None)) if device == "cuda" else {cpu_name()}

    return plan_imports(config.seed_from, config.seed_top, config.archive_dir, new, names)


def parse_spec(text: str) -> tuple[str, list[str]]:
    """'RUN' -> (RUN, []); 'RUN:e000012,e000040' -> (RUN, ids). RUN may be a path."""
    match = SPEC.match(text.strip())
    if match:
        return match.group("run"), match.group("ids").split(",")
    return text.strip(), []


def plan_imports(
    seed_from: list[str],
    seed_top: int | None,
    archive_dir: str | Path,
    new: dict[str, Any],
    device_names: Callable[[], set[str]] = set,
) -> ImportPlan:
    """Read the source runs (read-only) and decide, per source, carry-over or re-evaluation.

    new: the new run's budget, dataset_fingerprint, eval_tokens and device (kind).
    device_names: the new run's GPU or CPU model names, asked only when the kinds match.
    seed_top: the K best elites of each source (by mean val_bpb) when no ids are chosen.
    """
    if seed_top is not None and (not isinstance(seed_top, int) or seed_top < 1):
        raise UserError(
            f"--seed-top is {seed_top!r}",
            "it is a number of elites",
            "pass --seed-top K with K >= 1",
        )
    if seed_top is not None and not seed_from:
        raise UserError(
            "--seed-top without --seed-from",
            "it picks elites of the source runs",
            "add --seed-from RUN",
        )
    sources: list[SourcePlan] = []
    seen: set[str] = set()
    noise: list[float] = []
    for spec in seed_from:
        run, ids = parse_spec(spec)
        with open_run(run, archive_dir) as archive:
            plan = _plan_source(archive, ids, seed_top, new, device_names)
            noise.append(archive.rule.noise_std)
        plan.imports = [i for i in plan.imports if i.genome not in seen]  # merged: first wins
        seen.update(i.genome for i in plan.imports)
        sources.append(plan)
    return ImportPlan(sources, max(noise) if noise else None)


def _plan_source(
    archive: RunArchive,
    ids: list[str],
    seed_top: int | None,
    new: dict[str, Any],
    device_names: Callable[[], set[str]],
) -> SourcePlan:
    if ids:
        targets = [resolve(archive, i) for i in ids]
    else:
        elites = sorted(archive.elites(), key=lambda e: e.mean)[:seed_top]
        if not elites:
            raise UserError(
                f"run {archive.name} has no elites to seed from",
                "none of its evaluations scored yet",
                "pick another run, or wait",
            )
        targets = [genome_target(archive, e.genome) for e in elites]
    imports = [
        Import(
            archive.name,
            str(archive.path.resolve()),
            t.genome,
            archive.genome_source(t.genome),
            t.id,
            str(t.field("idea", "") or ""),
            [r for r in archive.evaluations_of(t.genome) if not r.sealed],
        )
        for t in targets
    ]
    differences = differing_settings(archive.config, imports, new, device_names)
    return SourcePlan(archive.name, not differences, differences, imports, archive.grid.to_list())


def differing_settings(
    config: dict[str, Any],
    imports: list[Import],
    new: dict[str, Any],
    device_names: Callable[[], set[str]] = set,
) -> list[str]:
    """Human sentences for each setting that makes the source's scores incomparable; [] if none."""
    old = stored_settings(config)
    out = [
        f"{label} {old[key]} ≠ {new[key]}"
        for key, label in COMPARED
        if old.get(key) != new.get(key)
    ]
    if not out:  # the same kind of device: the same model too? (one GPU's score is not another's)
        names = {r.result.device for i in imports for r in i.records if r.ok} - {None, ""}
        mine = device_names() if names else set()
        if names and mine and not names <= mine:
            out.append(f"device {', '.join(sorted(names))} ≠ {', '.join(sorted(mine))}")
    return out


def apply_imports(archive: RunArchive, plan: ImportPlan, pop: int, rng_seed: int) -> list[str]:
    """Store carried-over records and queue re-evaluations in the new run; returns notes."""
    notes: list[str] = []
    carried: list[Evaluation] = []
    pending = PendingTasks(archive.path)
    for index, (imp, carry) in enumerate(plan.imports):
        gen = index // pop  # the engine's numbering: the index-th member of the population
        genome = archive.put_genome(imp.source)
        if carry:
            carried.extend(_carry(archive, imp, genome, gen))
            continue
        task_id = archive.new_eval_id()
        pending.put(
            Task(
                id=task_id,
                gen=gen,
                kind="import",
                genome=genome,
                seed=zlib.crc32(f"{rng_seed}:{task_id}".encode()),
                operator="import",
                idea=_idea(imp),
                meta={"origin": imp.origin()},
            )
        )
    archive.insert_many(carried)
    for source in plan.sources:
        if not source.imports:
            continue
        what = f"{len(source.imports)} genome(s) from {source.run}"
        if source.carry:
            notes.append(
                f"seeding: {what}: evaluations carried over (same budget, data, device "
                "and held-out tokens)"
            )
        else:
            notes.append(
                f"seeding: {what} will be re-evaluated here before their scores count: "
                + "; ".join(source.differences)
            )
        if source.grid and Grid.from_list(source.grid) != archive.grid:
            notes.append(
                f"seeding: {source.run} used another grid "
                f"({_grid_text(source.grid)}); its elites are re-binned into this run's "
                f"({_grid_text(archive.grid.to_list())})"
            )
    unplaced = [r.id for r in carried if r.ok and r.cell is None]
    if unplaced:
        notes.append(
            f"seeding: {len(unplaced)} carried evaluation(s) lack a descriptor of this "
            f"run's grid ({', '.join(archive.grid.names)}) and hold no cell"
        )
    return notes


def _grid_text(grid: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['name']} [{d['low']:g}, {d['high']:g}) x{d['bins']}" for d in grid)


def _idea(imp: Import) -> str:
    return f"imported from {imp.run}:{imp.origin_id}" + (f": {imp.idea}" if imp.idea else "")


def _carry(archive: RunArchive, imp: Import, genome: str, gen: int) -> list[Evaluation]:
    """New records for the source's evaluations of one genome, re-binned into this grid."""
    out = []
    for k, old in enumerate(imp.records):
        descriptors = archive.grid.describe(old.result, imp.source)
        cell = archive.grid.cell_if_known(descriptors)
        new_id = archive.new_eval_id()
        out.append(
            Evaluation(
                id=new_id,
                generation=gen,
                genome=genome,
                parents=[] if k == 0 else [genome],
                operator="import" if k == 0 else "reeval",
                idea=_idea(imp) if k == 0 else f"re-evaluation, imported from {imp.run}:{old.id}",
                result=old.result,
                descriptors=descriptors,
                cell=None if cell is None else list(cell),
                created=time.time(),
                origin=imp.origin(old.id),
            )
        )
        _copy_log(Path(imp.path) / "logs" / f"{old.id}.log", archive.log_path(new_id))
    return out


def _copy_log(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except FileNotFoundError:
        pass  # a source run without its log: the record still says what happened
