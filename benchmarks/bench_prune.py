"""Learning-curve pruning, measured: training time saved, evaluations per hour, and regret.

Two real searches (`evolve start`, built-in operators, one CPU slot, short budget) with
the same wall-time limit, side by side (each on one of the machine's cores, so both
meet the same load; `--one-by-one` runs them in turn):

- `shadow`: every child runs to completion; the runner records when pruning would have
  stopped it. This arm gives the counterfactuals: the training time pruning would
  give back, and the regret: of the children it would have stopped, how many entered
  the archive (new cell or replaced an incumbent) or beat the best score so far.
- `on`: children behind their parent's curve are stopped. This arm gives the real
  evaluations per hour and the best val_bpb after the same wall time.

    python benchmarks/bench_prune.py [--budget 4] [--minutes 8] [--pop 6] [--out DIR]

Corpus: ../shared/data/tinyshakespeare.txt (next to the checkout, or one level up) if
present, else the builtin corpus. Small enough for a shared 2-core machine; one pair
of runs is one sample, so read the figures with their counts.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evolve.archive import Elite, EliteRule, ElitesMap, RunArchive
from evolve.archive.grid import Grid
from evolve.config import PRUNE_REFERENCES, RunConfig
from evolve.engine.pruning import Pruning
from evolve.record import Evaluation
from evolve.testkit.tiny import set_constants

ROOT = Path(__file__).resolve().parents[1]

GENOME = {"SEQ_LEN": 64, "BATCH_SIZE": 16, "N_LAYER": 2, "N_HEAD": 2, "N_EMBD": 64, "LOG_EVERY": 2}
ENTERED = ("new_cell", "replaced")
SEEDLIKE = ("seed", "reeval", "test")


def corpus() -> str:
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "data" / "tinyshakespeare.txt"
        if path.is_file():
            return str(path)
    return "builtin"


def search(mode: str, args: argparse.Namespace, folder: Path, seed: Path) -> float:
    """One `evolve start` run; returns its wall seconds."""
    config = folder / f"{mode}.toml"
    config.write_text(
        f'prune = "{mode}"\nconfirm = 1\nnoise_repeats = 3\n'
        f"prune_checkpoints = {json.dumps(args.checkpoints)}\n"
        f'prune_reference = "{args.reference}"\n'
    )
    command = [
        sys.executable,
        "-m",
        "evolve.cli",
        "start",
        "--pop",
        str(args.pop),
        "--budget",
        str(args.budget),
        "--time-limit",
        str(args.minutes * 60),
        "--data",
        args.data,
        "--devices",
        "cpu:1",
        "--threads",
        "1",
        "--eval-tokens",
        str(args.eval_tokens),
        "--archive-dir",
        str(folder),
        "--name",
        mode,
        "--seed-genome",
        str(seed),
        "--config",
        str(config),
    ]
    began = time.monotonic()
    with open(folder / f"{mode}.out", "w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False, cwd=ROOT)
    return time.monotonic() - began


def children(records: list[Evaluation]) -> list[Evaluation]:
    return [r for r in records if r.operator not in SEEDLIKE and not r.sealed]


def analyse(mode: str, folder: Path, wall: float, budget: float) -> dict:
    with RunArchive.open(folder / mode) as archive:
        records = sorted(archive.evaluations(), key=lambda r: r.seq)
        elites = archive.elites()
    val = [r for r in records if not r.sealed]
    kids = children(val)
    best_so_far, beat = math.inf, set()
    for r in val:  # did it beat the best single score seen before it?
        bpb = r.result.val_bpb
        if r.status == "ok" and bpb is not None:
            if r in kids and bpb < best_so_far:
                beat.add(r.id)
            best_so_far = min(best_so_far, bpb)
    trained = sum((r.result.training_seconds or 0.0) for r in kids)
    verdicts = [r for r in kids if r.result.prune]
    saved = sum(
        max(0.0, (r.result.training_seconds or budget) - r.result.prune["stopped"])
        for r in verdicts
    )
    if mode == "on":  # stopped children would have trained the full budget
        saved = sum(max(0.0, budget - r.result.prune["stopped"]) for r in verdicts)
        trained += saved
    entries = [r for r in kids if r.decision in ENTERED]
    best = min((e.mean for e in elites), default=math.nan)
    return {
        "mode": mode,
        "wall_s": round(wall, 1),
        "evaluations": len(val),
        "children": len(kids),
        "evals_per_hour": round(len(val) / wall * 3600, 1),
        "statuses": {s: sum(r.status == s for r in val) for s in sorted({r.status for r in val})},
        "pruned_or_would": len(verdicts),
        "child_training_s": round(trained, 1),
        "training_saved_s": round(saved, 1),
        "training_saved_share": round(saved / trained, 3) if trained else None,
        "archive_entries": len(entries),
        "entries_pruned": sum(r.decision in ENTERED for r in verdicts),
        "would_pruned_that_beat_best": sum(r.id in beat for r in verdicts),
        "children_that_beat_best": len(beat),
        "best_val_bpb": round(best, 4),
        "projected_evals_per_hour": round(len(val) / max(1.0, wall - saved) * 3600, 1)
        if mode == "shadow"
        else None,
    }


class _Before:
    """The archive as a child saw it when it started: records stored before it (by seq)."""

    def __init__(
        self, records: list[Evaluation], sources: dict[str, str], grid: Grid, rule: EliteRule
    ) -> None:
        self.records, self.sources, self.before = records, sources, 0
        self.grid, self.rule = grid, rule
        self.by_id = {r.id: r for r in records}

    def genome_source(self, genome: str) -> str:
        return self.sources[genome]

    def evaluations_of(self, genome: str) -> list[Evaluation]:
        return [r for r in self.records if r.genome == genome and r.seq < self.before]

    def get(self, eval_id: str) -> Evaluation | None:
        return self.by_id.get(eval_id)

    def elites(self) -> list[Elite]:
        """The elite map as it stood: the stored records before the child, replayed."""
        emap = ElitesMap(self.grid.total_cells, self.rule)
        for r in self.records:
            if r.seq < self.before and r.ok and r.cell is not None and r.val_bpb is not None:
                emap.add(r.genome, tuple(r.cell), r.val_bpb, r.id, r.descriptors)
        return emap.elites()


def sweep(
    folder: Path, budget: float, settings: list[tuple[float, list[float], str]]
) -> list[dict]:
    """Replay pruning on the shadow arm's complete curves under other margins, checkpoints and
    references (REFERENCES): the same `Pruning` and `PrunePlan` code, each child against what
    was stored before it."""
    with RunArchive.open(folder / "shadow") as archive:
        records = sorted(archive.evaluations(), key=lambda r: r.seq)
        sources = {r.genome: archive.genome_source(r.genome) for r in records}
        grid, rule = archive.grid, archive.rule
    val = [r for r in records if not r.sealed]
    seeds = list(dict.fromkeys(r.genome for r in val if r.operator == "seed"))
    kids = [r for r in children(val) if r.status == "ok"]
    best_before, best = {}, math.inf
    for r in val:
        best_before[r.id] = best
        if r.status == "ok":
            best = min(best, r.result.val_bpb)
    rows = []
    for z, checkpoints, reference in settings:
        past = _Before(val, sources, grid, rule)
        config = RunConfig(budget=budget, prune="shadow", prune_z=z, prune_checkpoints=checkpoints)
        if reference == "parent-any-shape":
            config.prune_shape = []
        config.prune_reference = "cell" if reference == "cell" else "parent"
        pruning = Pruning(config, past, seeds)  # type: ignore[arg-type]
        stopped = trained = 0.0
        cut, lost, lost_best = 0, 0, 0
        for r in kids:
            past.before = r.seq
            pruning._spread_final = False  # the seed spread as it stood then
            plan = pruning.plan(r.parents, r.genome)
            seconds = r.result.training_seconds or budget
            trained += seconds
            points = [tuple(p) for p in r.result.curve or []]
            verdict = plan.judge(points, budget) if plan else None
            if verdict:
                cut += 1
                stopped += max(0.0, seconds - verdict["at"])
                lost += r.decision in ENTERED
                lost_best += r.result.val_bpb < best_before[r.id]
        entries = sum(r.decision in ENTERED for r in kids)
        bests = sum(r.result.val_bpb < best_before[r.id] for r in kids)
        rows.append(
            {
                "z": z,
                "checkpoints": checkpoints,
                "reference": reference,
                "pruned": cut,
                "children": len(kids),
                "training_saved_share": round(stopped / trained, 3) if trained else None,
                "entries_lost": f"{lost}/{entries}",
                "bests_lost": f"{lost_best}/{bests}",
            }
        )
    return rows


# parent: the parent's curve, same-shape children only (the default); parent-any-shape: the
# parent's, every child; cell: the incumbent's of the child's predicted cell, of its shape
REFERENCES = ("parent", "parent-any-shape", "cell")
SWEEP = [
    (z, cps, reference)
    for z in (0.5, 1.0, 2.0, 3.0, 5.0)
    for cps in ([0.1, 0.2], [0.2, 0.4, 0.6], [0.3, 0.5])
    for reference in REFERENCES
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=4.0)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall time per arm")
    parser.add_argument("--pop", type=int, default=6)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--checkpoints", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    parser.add_argument("--data", default=corpus())
    parser.add_argument(
        "--reference", choices=PRUNE_REFERENCES, default="parent", help="the live arms' reference"
    )
    parser.add_argument("--arms", nargs="+", default=["shadow", "on"])
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--one-by-one", action="store_true", help="run the arms in turn")
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="no new runs: replay other settings on the shadow arm in --out",
    )
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-prune-"))
    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "seed.py"
    seed.write_text(set_constants((ROOT / "train.py").read_text(), **GENOME))
    print(
        f"data {args.data}, budget {args.budget:g} s, {args.minutes:g} min per arm, "
        f"pop {args.pop}, checkpoints {args.checkpoints}, runs in {folder}",
        flush=True,
    )
    arms = [] if args.sweep_only else args.arms
    with ThreadPoolExecutor(1 if args.one_by_one else max(1, len(arms))) as pool:
        walls = list(pool.map(lambda mode: search(mode, args, folder, seed), arms))
    results = [
        analyse(mode, folder, wall, args.budget) for mode, wall in zip(arms, walls, strict=True)
    ]
    for row in results:
        print(json.dumps(row), flush=True)
    for row in results:
        if row["mode"] == "shadow":
            lost = row["entries_pruned"] / row["archive_entries"] if row["archive_entries"] else 0
            print(
                f"shadow: pruning would stop {row['pruned_or_would']}/{row['children']} "
                f"children, give back {100 * (row['training_saved_share'] or 0):.0f} % of their "
                f"training time, lose {row['entries_pruned']}/{row['archive_entries']} archive "
                f"entries ({100 * lost:.0f} %) and {row['would_pruned_that_beat_best']}/"
                f"{row['children_that_beat_best']} new bests; evals/h {row['evals_per_hour']} "
                f"-> {row['projected_evals_per_hour']} projected",
                flush=True,
            )
        else:
            print(
                f"{row['mode']}: {row['evaluations']} evaluations in {row['wall_s']} s "
                f"({row['evals_per_hour']}/h), {row['pruned_or_would']} pruned, best "
                f"val_bpb {row['best_val_bpb']}",
                flush=True,
            )
    if (folder / "shadow").is_dir():
        print(
            "replayed on the shadow arm's complete curves (z, checkpoints, pruned, training "
            "saved, archive entries lost, new bests lost):",
            flush=True,
        )
        for row in sweep(folder, args.budget, SWEEP):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
