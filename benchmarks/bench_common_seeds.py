"""How much of the fitness noise is the training seed, and does it cancel between genomes?

At short budgets a genome's val_bpb moves more with its training seed (initial
weights, batch order) than with anything else. If that effect is shared between a
parent and a child that differs in a hyperparameter, comparing the two on the same
seeds (common random numbers) cancels it: the std of a paired difference is far
below the unpaired sqrt(s_a^2 + s_b^2). This evaluates the small benchmark seed and a
few one-constant variants on the same K seeds (run twice in order to see the same-seed
repeatability) and prints, per variant: each genome's std over seeds, the paired and
unpaired std of the difference, and their ratio.

    python benchmarks/bench_common_seeds.py --budget 3 --seeds 6 --data ../shared/data/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_search import small_seed

from evolve.harness.data import prepare
from evolve.runner import RunSettings, run_genome
from evolve.testkit.tiny import set_constants

VARIANTS = {
    "lr x2": {"LEARNING_RATE": 6e-3},
    "width 32": {"N_EMBD": 32},
    "seq 32": {"SEQ_LEN": 32},
    "1 layer": {"N_LAYER": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    dataset = prepare(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        base = small_seed(Path(tmp)).read_text()
        genomes = {"seed": base} | {
            name: set_constants(base, **change) for name, change in VARIANTS.items()
        }
        seeds = [1000 + 7919 * k for k in range(args.seeds)]
        jobs = [(name, s) for s in seeds for name in genomes]

        def evaluate(job: tuple[str, int], tag: str) -> float | None:
            name, seed = job
            settings = RunSettings(
                budget=args.budget, eval_tokens=args.eval_tokens, threads=1, seed=seed
            )
            work = Path(tmp) / f"{tag}-{name}-{seed}".replace(" ", "_")
            result = run_genome(genomes[name], dataset, settings, work, work.with_suffix(".log"))
            return result.val_bpb if result.status == "ok" else None

        with ThreadPoolExecutor(args.slots) as pool:
            first = list(pool.map(lambda j: evaluate(j, "a"), jobs))
            again = list(pool.map(lambda j: evaluate(j, "b"), jobs))
    score = {job: (a, b) for job, a, b in zip(jobs, first, again, strict=True)}
    print(f"{args.budget:g} s budget, {args.seeds} seeds, {dataset.name}, {args.slots} slots")
    for name in genomes:
        runs = [score[(name, s)] for s in seeds]
        firsts = [a for a, _ in runs if a is not None]
        repeat = [a - b for a, b in runs if a is not None and b is not None]
        print(
            f"  {name:9s} mean {statistics.fmean(firsts):.3f}  std over seeds "
            f"{statistics.stdev(firsts):.3f}  same-seed repeat std "
            f"{statistics.stdev(repeat) / 2**0.5:.3f}  per seed "
            + " ".join(f"{a:.3f}" for a in firsts)
        )
    for name in VARIANTS:
        pairs = [(score[(name, s)][0], score[("seed", s)][0]) for s in seeds]
        pairs = [(c, p) for c, p in pairs if c is not None and p is not None]
        child, parent = [c for c, _ in pairs], [p for _, p in pairs]
        paired = statistics.stdev([c - p for c, p in pairs])
        unpaired = (statistics.variance(child) + statistics.variance(parent)) ** 0.5
        corr = statistics.correlation(child, parent)
        print(
            f"  {name:9s} - seed: mean diff {statistics.fmean(child) - statistics.fmean(parent):+.3f}"
            f"  std paired {paired:.3f} unpaired {unpaired:.3f} (ratio {paired / unpaired:.2f})"
            f"  correlation {corr:+.2f}"
        )


if __name__ == "__main__":
    main()
