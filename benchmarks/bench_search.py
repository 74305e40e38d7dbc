"""Does the archive beat a greedy lineage? Strategies side by side, same task and evaluation count.

Each strategy (map-elites, greedy = autoresearch's protocol, random = children of the seed)
runs `--seeds` times for `--evals` evaluations (seeds' noise repeats, children, races and
confirmations all count), interleaved seed by seed so machine load hits all alike, with
the same operators, budget, data and slots. Printed and plotted:

- the confirmed best val_bpb after N evaluations (median and quartiles over seeds);
- the evaluations each strategy needs to reach greedy's best-after-N of the same seed;
- coverage and QD score after N.

Real evaluations by default (a short CPU budget; the small seed genome is train.py at
2 layers of width 64, so a 3 s budget trains it for some hundred steps):

    python benchmarks/bench_search.py --evals 64 --seeds 5 --budget 3 \
        --data /work/shared/data/tinyshakespeare.txt --out /tmp/bench-search

Surrogate mode answers from a response surface fitted to recorded real evaluations
(evolve/executors/surrogate.py): thousands of evaluations in seconds, for tuning only.

    python benchmarks/bench_search.py --fit /tmp/bench-search/*/ --save-surrogate S.json
    python benchmarks/bench_search.py --surrogate benchmarks/data/surrogate.json --evals 256
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from evolve.archive import RunArchive
from evolve.browse.curve import at, evals_to_reach, search_curve
from evolve.config import RunConfig
from evolve.executors.surrogate import Surrogate, SurrogateExecutor, fit, samples_from_runs
from evolve.runner import RunSettings
from evolve.testkit.tiny import set_constants

ROOT = Path(__file__).resolve().parents[1]

SMALL = {"SEQ_LEN": 64, "BATCH_SIZE": 16, "N_LAYER": 2, "N_HEAD": 2, "N_EMBD": 64}
STRATEGIES = ("map-elites", "greedy", "random")


def small_seed(folder: Path) -> Path:
    path = folder / "seed_small.py"
    path.write_text(set_constants((ROOT / "train.py").read_text(), **SMALL))
    return path


def run_one(config: RunConfig, surrogate: Surrogate | None, slots: int) -> Path:
    """One search to `config.max_evals` evaluations; returns its run folder."""
    from evolve.engine import start

    def build(cfg: RunConfig, dataset: Any):
        if surrogate is None:
            from evolve.executors.factory import build_executor

            return build_executor(cfg, dataset)
        return SurrogateExecutor(surrogate, slots), RunSettings(budget=cfg.budget, device="cpu")

    prepared = start(config, build)
    prepared.run_to_end()
    return Path(config.archive_dir) / config.name


def measure(run: Path, evals: int, surrogate: Surrogate | None) -> dict[str, Any]:
    with RunArchive.open(run) as archive:
        truth = None
        if surrogate is not None:

            def truth(genome: str) -> float:
                return surrogate.predict(archive.genome_source(genome))["mean"]

        points = search_curve(archive, truth)
    end = at(points, evals)
    return {
        "points": [(p.evals, p.best, p.true_best, p.coverage, p.qd_score) for p in points],
        "best": end.best if end else None,
        "true_best": end.true_best if end else None,
        "coverage": end.coverage if end else 0.0,
        "qd": end.qd_score if end else 0.0,
        "made": len(points),
    }


def quartiles(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarize(
    results: dict[str, list[dict]], evals: int, true: bool, reference: str = "greedy"
) -> list[str]:
    """One row per arm: its best after N, and the evaluations it needs to reach the best
    that the `reference` arm had after N: seed by seed (paired; "median" is the median of
    those), and where its median curve meets the reference's median best ("curves")."""
    key = "true_best" if true else "best"
    index = 2 if true else 1  # the field of a stored point
    lines = [
        f"{'arm':<14} {'best@N median [q1, q3]':<30} {f'evals to {reference}@N (per seed)':<34}"
        f" {'median':>6} {'curves':>6} {'coverage':>8} {'QD':>8}"
    ]
    greedy = results.get(reference)
    reference_bests = [r[key] for r in greedy or [] if r[key] is not None]
    for name, runs in results.items():
        bests = [r[key] for r in runs if r[key] is not None]
        q1, med, q3 = quartiles(bests) if bests else (float("nan"),) * 3
        reach: list[int | None] = []
        if greedy:
            for run, other in zip(runs, greedy, strict=True):
                target = other[key]
                points = [_point(p) for p in run["points"]]
                reach.append(None if target is None else evals_to_reach(points, target, true))
        finite = sorted(r if r is not None else 10**9 for r in reach)
        paired = statistics.median_high(finite) if finite else None  # never between two
        text = "-" if paired is None else (">N" if paired >= 10**9 else f"{paired:g}")
        # unpaired: where this arm's median curve meets the reference's median best after N
        curves = None
        if reference_bests:
            curves = median_reach(runs, statistics.median(reference_bests), evals, index)
        lines.append(
            f"{name:<14} {med:.4f} [{q1:.4f}, {q3:.4f}]{'':<8} "
            f"{str([r if r is not None else '>N' for r in reach]):<34} {text:>6} "
            f"{'-' if not reference_bests else ('>N' if curves is None else curves):>6} "
            f"{statistics.median(r['coverage'] for r in runs):8.1%} "
            f"{statistics.median(r['qd'] for r in runs):8.2f}"
        )
    return lines


def references(results: dict[str, list[dict]]) -> list[str]:
    """The greedy arms (labels that start with "greedy"): reach is measured against each."""
    return [name for name in results if name.startswith("greedy")] or ["greedy"]


def parse_arms(text: str) -> dict[str, str]:
    """`--strategies` as {label: strategy}: "map-elites,greedy,greedy-z2:greedy" runs greedy
    twice, as `greedy` and as `greedy-z2` (each label may have its own `--config-for`)."""
    arms: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        label, _, strategy = item.partition(":")
        strategy = strategy or label
        if strategy not in STRATEGIES or not label or label in arms:
            raise SystemExit(
                f"--strategies {item!r}: want STRATEGY or LABEL:STRATEGY, labels unique, "
                f"STRATEGY one of {', '.join(STRATEGIES)}"
            )
        arms[label] = strategy
    return arms


def band(runs: list[dict], k: int, index: int) -> tuple[float, float, float]:
    """Quartiles over seeds of the confirmed best after k evaluations (nan: none yet)."""
    values = [r["points"][min(k, len(r["points"])) - 1][index] for r in runs if r["points"]]
    values = [v for v in values if v is not None]
    return quartiles(values) if values else (float("nan"),) * 3


def median_reach(runs: list[dict], target: float, evals: int, index: int) -> int | None:
    """Unpaired reach: the first k whose median over seeds is at or below `target`."""
    return next((k for k in range(1, evals + 1) if band(runs, k, index)[1] <= target), None)


def _point(row: list) -> Any:
    from evolve.browse.curve import Point

    evals, best, true_best, coverage, qd = row
    return Point(evals, best, None, coverage, qd, true_best)


def plot(results: dict[str, list[dict]], evals: int, path: Path, true: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    index = 2 if true else 1
    for name, runs in results.items():
        xs = list(range(1, evals + 1))
        meds, lows, highs, covs = [], [], [], []
        for k in xs:
            q1, med, q3 = band(runs, k, index)
            meds.append(med)
            lows.append(q1)
            highs.append(q3)
            covs.append(
                statistics.median(
                    r["points"][min(k, len(r["points"])) - 1][3] for r in runs if r["points"]
                )
            )
        left.plot(xs, meds, label=name)
        left.fill_between(xs, lows, highs, alpha=0.2)
        right.plot(xs, covs, label=name)
    left.set_xlabel("evaluations")
    left.set_ylabel(("true " if true else "") + "confirmed best val_bpb (median, IQR)")
    right.set_xlabel("evaluations")
    right.set_ylabel("coverage")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(folder: Path, evals: int, surrogate: Surrogate | None) -> None:
    """The summary of runs made by earlier invocations (e.g. seeds run in several goes)."""
    results: dict[str, list[dict]] = {}
    runs = sorted((folder / "runs").iterdir(), key=lambda p: (p.name.rsplit("-s", 1)[1], p.name))
    for run in runs:
        strategy = run.name.rsplit("-s", 1)[0]
        results.setdefault(strategy, []).append(measure(run, evals, surrogate))
    order = [s for s in STRATEGIES if s in results] + [s for s in results if s not in STRATEGIES]
    results = {name: results[name] for name in order}
    for name, rows in results.items():
        print(
            f"{name:<22} seeds {len(rows)}: best@N "
            + ", ".join("-" if r["best"] is None else f"{r['best']:.4f}" for r in rows)
        )
    aligned = {k: v for k, v in results.items() if len(v) == len(results.get("greedy", v))}
    for true in [False, True] if surrogate else [False]:
        for reference in references(aligned):
            print("\n".join(summarize(aligned, evals, true, reference)))
    plot(aligned, evals, folder / "search.png", bool(surrogate))
    print(f"plot: {folder / 'search.png'}")


def strategy_settings(pairs: list[str], labels: list[str]) -> dict[str, dict[str, Any]]:
    """`--config-for LABEL=TOML` pairs as {arm label: settings}."""
    from evolve.config import load_toml

    own: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        if name not in labels or not path:
            raise SystemExit(
                f"--config-for {pair!r}: want LABEL=TOML with LABEL one of the arms "
                f"{', '.join(labels)}"
            )
        own[name] = load_toml(path)
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=64, help="N: evaluations per run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="arms: STRATEGY or LABEL:STRATEGY, e.g. map-elites,greedy,greedy-z2:greedy",
    )
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--seed-genome", default=None, help="default: train.py made small")
    parser.add_argument(
        "--config",
        default=None,
        help="TOML with run settings for every run "
        "(selection, z, race, noise_prior, cxpb, descriptors, operators)",
    )
    parser.add_argument(
        "--config-for",
        action="append",
        default=[],
        metavar="LABEL=TOML",
        help="settings for one arm only, over --config (repeatable), e.g. "
        "map-elites=me.toml to compare a map-elites setting with greedy's",
    )
    parser.add_argument("--surrogate", default=None, help="a fitted surrogate (JSON): no real runs")
    parser.add_argument("--fit", nargs="*", default=None, help="run folders to fit a surrogate to")
    parser.add_argument("--save-surrogate", default=None)
    parser.add_argument("--out", default=None, help="where runs, summary and plot go")
    parser.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="measure every run under DIR/runs (named STRATEGY-sSEED) again",
    )
    args = parser.parse_args()

    if args.report:
        report(
            Path(args.report),
            args.evals,
            Surrogate.load(args.surrogate) if args.surrogate else None,
        )
        return

    if args.fit:
        samples, reference = samples_from_runs(args.fit)
        surrogate = fit(samples, reference)
        target = Path(args.save_surrogate or "surrogate.json")
        surrogate.save(target)
        print(f"fitted to {len(samples)} evaluations of {len(args.fit)} run(s): {target}")
        print(f"seed: {surrogate.predict(reference)}")
        return
    surrogate = Surrogate.load(args.surrogate) if args.surrogate else None
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-search-"))
    out.mkdir(parents=True, exist_ok=True)
    seed_genome = args.seed_genome or str(small_seed(out))
    extra: dict[str, Any] = {}
    if args.config:
        from evolve.config import load_toml

        extra = load_toml(args.config)
    arms = parse_arms(args.strategies)
    own = strategy_settings(args.config_for, list(arms))
    mode = "surrogate" if surrogate else f"real, {args.budget:g} s budget, {args.slots} slots"
    print(
        f"bench_search: {mode}; N={args.evals}, {args.seeds} seeds, pop {args.pop}, "
        f"data {args.data}; settings {extra}"
        + "".join(f"; {name}: {settings}" for name, settings in own.items()),
        flush=True,
    )
    results: dict[str, list[dict]] = {label: [] for label in arms}
    began = time.monotonic()
    archive_dir = out / "runs"
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for label, strategy in arms.items():
            name = f"{label}-s{seed}"
            shutil.rmtree(archive_dir / name, ignore_errors=True)
            config = RunConfig.from_dict(
                {
                    "name": name,
                    "archive_dir": str(archive_dir),
                    "seed_genomes": [seed_genome],
                    "pop": args.pop,
                    "budget": args.budget,
                    "data": args.data,
                    "devices": f"cpu:{args.slots}",
                    "eval_tokens": args.eval_tokens,
                    "strategy": strategy,
                    "rng_seed": seed,
                    "max_evals": args.evals,
                    **extra,
                    **own.get(label, {}),
                }
            ).validate()
            t0 = time.monotonic()
            run = run_one(config, surrogate, args.slots)
            result = measure(run, args.evals, surrogate)
            results[label].append(result)
            print(
                f"  {name:<16} best@N {result['best']}  true {result['true_best']}  "
                f"coverage {result['coverage']:.1%}  evals {result['made']}  "
                f"{time.monotonic() - t0:.1f} s",
                flush=True,
            )
    print(f"\n{sum(len(v) for v in results.values())} runs in {time.monotonic() - began:.0f} s")
    for true in [False, True] if surrogate else [False]:
        print("\n" + ("noise-free (surrogate truth):" if true else "measured:"))
        for reference in references(results):
            print("\n".join(summarize(results, args.evals, true, reference)))
    (out / "summary.json").write_text(
        json.dumps({"args": vars(args), "settings": extra, "own": own, "results": results})
    )
    plot(results, args.evals, out / "search.png", bool(surrogate))
    print(f"\nsummary: {out / 'summary.json'}; plot: {out / 'search.png'}")


if __name__ == "__main__":
    main()
