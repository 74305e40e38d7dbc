"""Per-evaluation overhead: wall seconds on the slot not spent in the training budget.

Overhead = wall_seconds - budget: fork from the zygote, sandbox set-up,
export, evaluation and tear-down. The zygote's own start (interpreter, torch
imports) happens once per run and is printed on its own line.
Target: <= 3 % of a 300 s budget.

    python benchmarks/bench_overhead.py --budgets 10 30 60 [--genome train.py] [--data builtin]
        [--device auto|cpu|cuda] [--json FILE]   (FILE: the rows as JSON, for gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evolve.config import RunConfig
from evolve.harness.data import prepare
from evolve.runner import RunSettings, run_genome, sandbox, zygotes
from evolve.runner.devices import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[10, 30, 60])
    parser.add_argument("--genome", default="train.py")
    parser.add_argument("--data", default=RunConfig.data)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--eval-tokens", type=int, default=RunConfig.eval_tokens)
    parser.add_argument("--json", default=None, help="also write the rows to this file as JSON")
    args = parser.parse_args()
    source = Path(args.genome).read_text()
    dataset = prepare(args.data)
    device = resolve_device(args.device)
    print(
        f"genome {args.genome}, data {dataset.name}, device {device}, eval_tokens {args.eval_tokens}"
    )
    start, base = time.monotonic(), RunSettings(device=device)
    zygotes.get(base.threads, base.cuda_visible, sandbox.harness_hashes())
    zygote_s = time.monotonic() - start
    print(f"zygote start (once per run): {zygote_s:.1f} s")
    rows = []
    print(
        f"{'budget':>8} {'status':>8} {'train_s':>8} {'wall_s':>8} {'overhead_s':>10} "
        f"{'overhead_%':>10} {'val_bpb':>8}"
    )
    for budget in args.budgets:
        with tempfile.TemporaryDirectory() as tmp:
            settings = RunSettings(budget=budget, device=device, eval_tokens=args.eval_tokens)
            r = run_genome(source, dataset, settings, Path(tmp) / "work", Path(tmp) / "log.txt")
        overhead = r.wall_seconds - budget
        bpb = f"{r.val_bpb:.4f}" if r.val_bpb is not None else r.reason[:40]
        print(
            f"{budget:8.0f} {r.status:>8} {r.training_seconds or 0:8.1f} {r.wall_seconds:8.1f} "
            f"{overhead:10.2f} {100 * overhead / budget:9.1f}% {bpb:>8}",
            flush=True,
        )
        rows.append(
            {
                "budget": budget,
                "status": r.status,
                "training_seconds": r.training_seconds,
                "wall_seconds": r.wall_seconds,
                "overhead_seconds": overhead,
                "overhead_percent": 100 * overhead / budget,
                "val_bpb": r.val_bpb,
                "steps": r.steps,
                "tokens": r.tokens,
                "peak_memory_bytes": r.peak_memory_bytes,
            }
        )
        if args.json:  # after every row: a step killed by its timeout keeps what it measured
            Path(args.json).write_text(
                json.dumps(
                    {
                        "device": device,
                        "genome": args.genome,
                        "zygote_seconds": zygote_s,
                        "rows": rows,
                    }
                )
            )


if __name__ == "__main__":
    main()
