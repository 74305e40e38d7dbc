"""Sampling noise of the secret held-out windows: one trained model, scored with many secrets.

The evaluator scores `eval_tokens` targets in windows at secret stratified offsets of
the held-out pool. Different secrets give slightly different val_bpb for the same
model; this prints that spread (std over secrets), to compare with the run-to-run
noise of training (the engine's noise level, measured from repeated seed runs).

    python benchmarks/bench_sampling_noise.py [--budget 60] [--secrets 20] [--data builtin]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
from pathlib import Path

from bench_eval_cost import evaluator_settings

from evolve.config import RunConfig
from evolve.harness import evaluate
from evolve.harness.data import prepare
from evolve.runner import RunSettings, run_genome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--secrets", type=int, default=20)
    parser.add_argument("--genome", default="train.py")
    parser.add_argument("--data", default=RunConfig.data)
    parser.add_argument("--eval-tokens", type=int, default=RunConfig.eval_tokens)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    dataset = prepare(args.data)
    settings = RunSettings(
        budget=args.budget,
        eval_tokens=args.eval_tokens,
        **({"threads": args.threads} if args.threads else {}),
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        result = run_genome(
            Path(args.genome).read_text(), dataset, settings, work, Path(tmp) / "log.txt"
        )
        print(
            f"{args.genome}, {args.budget:g} s on {dataset.name}: {result.status} {result.reason[:80]} "
            f"val_bpb {result.val_bpb} (secret of the run); scored again below either way"
        )
        config = evaluator_settings(dataset, args.eval_tokens, settings.export_batch)
        scores = []
        for _ in range(args.secrets):
            request = {
                "model": str(work / "genome" / "model.pt2"),
                "seq_len": result.seq_len,
                "secret": secrets.token_hex(32),
            }
            scores.append(evaluate.score(evaluate.prepare(request, config), config)["val_bpb"])
    print(
        f"{args.secrets} secrets, {args.eval_tokens} tokens each: mean {statistics.mean(scores):.4f}"
        f", std {statistics.stdev(scores):.4f}, min {min(scores):.4f}, max {max(scores):.4f}"
    )


if __name__ == "__main__":
    main()
