"""Archive speed at 1k, 10k and 100k evaluations: insert latency and listing the elites.

The archive is filled with realistic records (EvalResult(...).to_dict() plus ids,
cell and genome hash) on a 100-cell grid. The bulk of each size is loaded with
`insert_many` (one write per shard, to keep the benchmark short); then 200 single
`add_evaluation` calls, the production path with fsync, are timed at that size.

    python benchmarks/bench_archive.py [--sizes 1000,10000,100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from evolve.archive import Descriptor, EliteRule, Grid, RunArchive
from evolve.archive.shards import format_id
from evolve.record import EvalResult, Evaluation

GRID = Grid([Descriptor("model_size", 4, 9, 10), Descriptor("code_size", 50, 600, 10)])
TIMED = 200


def fake_result(rng: random.Random) -> EvalResult:
    ok = rng.random() < 0.8
    return EvalResult(
        status="ok" if ok else rng.choice(["crashed", "timeout", "oom"]),
        reason="" if ok else "Traceback (most recent call last): RuntimeError: shapes differ",
        val_bpb=rng.gauss(1.6, 0.2) if ok else None,
        training_seconds=300.0 + rng.random(),
        wall_seconds=320.0 + rng.random() * 10,
        steps=rng.randint(100, 5000),
        tokens=rng.randint(10**6, 10**9),
        params=int(10 ** rng.uniform(4, 9)),
        peak_memory_bytes=rng.randint(10**8, 8 * 10**10),
        device="NVIDIA H100 80GB HBM3",
        torch_version="2.5.1+cu124",
        dataset="3f9a1c2b7d4e5f60",
        budget=300.0,
        seed=rng.randint(0, 2**31),
        eval_tokens=2**20,
        seq_len=1024,
        log_path="archive/run/logs/e000001.log",
        sandbox="landlock,rlimits,netns",
        slot="gpu0",
        hardware={"gpu": "NVIDIA H100 80GB HBM3", "driver": "550.54", "cpus": 16},
    )


def fake_source(rng: random.Random) -> str:
    lines = rng.randint(40, 650)
    return "\n".join(f"x{i} = {rng.random()!r}  # step" for i in range(lines)) + "\n"


def fake_record(number: int, rng: random.Random, genomes: list[str]) -> Evaluation:
    result = fake_result(rng)
    values: dict[str, float | None] = {
        "model_size": rng.uniform(3.5, 9.5),
        "code_size": rng.uniform(30, 650),
    }
    return Evaluation(
        id=format_id(number),
        generation=number // 64,
        genome=rng.choice(genomes),
        parents=[format_id(max(1, number - rng.randint(1, 500)))],
        operator=rng.choice(["llm_mutate", "crossover", "tweak_lr"]),
        idea="swap GELU for SwiGLU and raise the learning rate warmup to 200 steps",
        result=result,
        descriptors=values,
        cell=list(GRID.cell_of(values)) if result.ok else None,
        created=time.time(),
    )


def bench(size: int, root: Path, rng: random.Random) -> dict[str, float]:
    genomes = [f"{rng.getrandbits(256):064x}" for _ in range(max(10, size // 3))]
    archive = RunArchive.create(root / f"run-{size}", {"size": size}, grid=GRID, rule=EliteRule())
    fill = size - TIMED
    t0 = time.perf_counter()
    for start in range(1, fill + 1, 5000):
        batch = [fake_record(n, rng, genomes) for n in range(start, min(fill, start + 4999) + 1)]
        archive.insert_many(batch)
    fill_s = time.perf_counter() - t0
    latencies = []
    for _ in range(TIMED):
        result, source = fake_result(rng), fake_source(rng)
        t = time.perf_counter()
        archive.add_evaluation(result, source, generation=size // 64, idea="timed insert")
        latencies.append(time.perf_counter() - t)
    archive.close()
    t = time.perf_counter()
    reopened = RunArchive.open(root / f"run-{size}", writer=True)
    reopen_s = time.perf_counter() - t
    reopened.close()
    t = time.perf_counter()
    reader = RunArchive.open(root / f"run-{size}")
    elites = reader.elites()
    list_s = time.perf_counter() - t
    t = time.perf_counter()
    total = reader.count()
    count_s = time.perf_counter() - t
    assert total == size, (total, size)
    t = time.perf_counter()
    reader.get(format_id(size // 2))
    get_s = time.perf_counter() - t
    latencies.sort()
    return {
        "size": size,
        "fill_s": fill_s,
        "insert_median_ms": statistics.median(latencies) * 1e3,
        "insert_p95_ms": latencies[int(0.95 * len(latencies))] * 1e3,
        "list_elites_ms": list_s * 1e3,
        "elites": len(elites),
        "count_ms": count_s * 1e3,
        "get_ms": get_s * 1e3,
        "writer_reopen_s": reopen_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build (default: a temp dir)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=args.dir))
    rng = random.Random(0)
    print(
        f"{'evals':>7} {'insert med ms':>13} {'p95 ms':>7} {'list elites ms':>14} "
        f"{'count ms':>9} {'get ms':>7} {'reopen s':>8} {'fill s':>7}"
    )
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            r = bench(size, root, rng)
            print(
                f"{r['size']:>7} {r['insert_median_ms']:>13.2f} {r['insert_p95_ms']:>7.2f} "
                f"{r['list_elites_ms']:>14.2f} {r['count_ms']:>9.1f} {r['get_ms']:>7.2f} "
                f"{r['writer_reopen_s']:>8.2f} {r['fill_s']:>7.1f}",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
