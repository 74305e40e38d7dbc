"""Do aimed LLM mutations land in their target niche, and do they fill the map faster?

Real engine runs (real CPU evaluations of a tiny genome) with LLM mutation only,
with every mutation aimed (`aim_share = 1`), with the default share (0.25) and
with none aimed (`aim_share = 0`), the same number of children each, several seeds. We report,
per arm: how many aimed children scored and how many of those landed in the
cell they were sent to, and the final coverage and QD score of the map.

By default the LLM is the scripted local endpoint of the tests
(`tests/llm_server.sizer`): it resizes the model (N_EMBD, N_LAYER), by the factor
an aimed prompt asks for, or by a random factor otherwise. That measures the
plumbing (facts, target description, recording), not an LLM's skill: it obeys
the aim by construction. The grid has one axis, model_size in quarter decades,
which is what that endpoint can move; `--axes 2` adds code_size, which it moves by
adding or removing no-op lines. With `--llm-base-url` and `--llm-model` the
same comparison runs against a real endpoint (and the default two-axis grid).

    python benchmarks/bench_aim.py [--seeds 2 --pop 4 --generations 5 --budget 1]
    python benchmarks/bench_aim.py --llm-base-url http://localhost:8000/v1 --llm-model M
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from evolve.archive import RunArchive
from evolve.config import DEFAULT_DESCRIPTORS, RunConfig
from evolve.engine import start
from evolve.executors.factory import build_executor
from evolve.testkit.llm_server import FakeLLM, sizer
from evolve.testkit.tiny import tiny_genome

ROOT = Path(__file__).resolve().parents[1]

GRIDS = {  # what the scripted endpoint can move: model size, and code lines (no-op lines)
    1: [{"name": "model_size", "low": 3.5, "high": 6.5, "bins": 12}],
    2: [
        {"name": "model_size", "low": 3.5, "high": 6.5, "bins": 6},
        {"name": "code_size", "low": 100, "high": 400, "bins": 6},
    ],
}
LINES = (-100, -50, 50, 100)  # the 2-axis endpoint's random code-size moves when not aimed


def one_run(
    folder: Path,
    name: str,
    aim_share: float,
    seed: int,
    args: argparse.Namespace,
    base_url: str,
    model: str,
) -> dict:
    grid = GRIDS[args.axes] if args.llm_base_url is None else DEFAULT_DESCRIPTORS
    config = RunConfig(
        name=name,
        archive_dir=str(folder),
        seed_genomes=[str(folder / "tiny.py")],
        pop=args.pop,
        generations=args.generations,
        budget=args.budget,
        eval_tokens=4096,
        device="cpu",
        devices=f"cpu:{args.slots}",
        noise_repeats=2,
        confirm=1,
        descriptors=grid,
        operators={"llm_mutate": 1.0},
        rng_seed=seed,
        llm={
            "models": [{"name": model}],
            "base_url": base_url,
            "aim_share": aim_share,
            "concurrency": 1,
            "program": str(ROOT / "program.md"),
        },
    ).validate()
    prepared = start(config, build_executor)
    prepared.run_to_end()
    with RunArchive.open(folder / name) as archive:
        records = list(archive.evaluations())
        summary = archive.summary()
    children = [r for r in records if r.operator == "llm_mutate"]
    aimed = [r for r in children if r.target is not None and r.ok]
    return {
        "children": len(children),
        "ok": sum(r.status == "ok" for r in children),
        "aimed": len(aimed),
        "landed": sum(r.target["landed"] for r in aimed),
        "to_empty": sum(r.target["held_by"] is None for r in aimed),
        "new": sum(r.decision == "new_cell" for r in children),
        "coverage": summary["coverage"],
        "qd": summary["qd_score"],
        "best": summary["best"],
        "cells": round(summary["coverage"] * archive.grid.total_cells),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--pop", type=int, default=4)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--axes",
        type=int,
        choices=(1, 2),
        default=1,
        help="scripted grid: model_size (1), or model_size x code_size (2)",
    )
    parser.add_argument("--mixed", type=float, default=0.25, help="aim_share of the middle arm")
    parser.add_argument("--llm-base-url", default=None)
    parser.add_argument("--llm-model", default="fake")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-aim-"))
    (folder / "tiny.py").write_text(tiny_genome())
    arms = (("aimed", 1.0), ("mixed", args.mixed), ("plain", 0.0))
    rows: dict[str, list[dict]] = {arm: [] for arm, _ in arms}
    for seed in range(args.seeds):
        for arm, share in arms:
            if args.llm_base_url is None:
                lines = LINES if args.axes == 2 else ()
                with FakeLLM(responder=sizer(seed=seed, lines=lines)) as fake:
                    row = one_run(folder, f"{arm}-{seed}", share, seed, args, fake.url, "fake")
            else:
                row = one_run(
                    folder, f"{arm}-{seed}", share, seed, args, args.llm_base_url, args.llm_model
                )
            rows[arm].append(row)
            print(
                f"seed {seed} {arm:<5}: children {row['children']} (ok {row['ok']}, "
                f"{row['new']} filled a new cell), aimed ok {row['aimed']} ({row['to_empty']} "
                f"sent to an empty cell), landed {row['landed']}; cells {row['cells']}, coverage "
                f"{row['coverage']:.3f}, QD {row['qd']:.2f}, "
                f"best {row['best'] or float('nan'):.4f}",
                flush=True,
            )
    endpoint = args.llm_base_url or "scripted local endpoint (tests/llm_server.sizer)"
    print(
        f"\n{endpoint}; {args.axes}-axis grid; {args.seeds} seed(s) x "
        f"{args.pop * args.generations} issued tasks per run, budget {args.budget:g} s, "
        f"{args.slots} CPU slots"
    )
    for arm, found in rows.items():
        aimed, landed = sum(r["aimed"] for r in found), sum(r["landed"] for r in found)
        rate = f"{landed}/{aimed} = {landed / aimed:.0%}" if aimed else "-"
        cells = statistics.fmean(r["cells"] for r in found)
        print(
            f"{arm:<5} (aim_share {dict(arms)[arm]:g}): landed in target {rate}; "
            f"cells {cells:.1f}"
            f", coverage {statistics.fmean(r['coverage'] for r in found):.3f}, QD "
            f"{statistics.fmean(r['qd'] for r in found):.2f} (mean over seeds)"
        )


if __name__ == "__main__":
    main()
