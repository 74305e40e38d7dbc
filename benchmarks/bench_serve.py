"""`evolve serve` at 100,000 evaluations: how fast the run page and a genome page answer.

Builds a run the way bench_archive.py does (its realistic records, bulk-loaded with
`insert_many`), but with real genome sources, parents that are genomes (so lineages
are hundreds of steps deep), logs, an LLM prompt and reply, and llm.json. Then it
starts the real server (`evolve serve --port 0`, a subprocess) and times whole HTTP
answers: the first request (for the run page, right after start, while the server
indexes the run in the background: every shard parsed once), then the median of 5
more, and the first answer after the writer added another shard's worth of
evaluations (the index reads only what changed).

    python benchmarks/bench_serve.py [--size 100000] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import GRID, fake_record  # noqa: E402

from evolve.archive import EliteRule, RunArchive  # noqa: E402

GENOMES = 3000  # distinct sources (each evaluated ~33 times at 100k)


def source_of(i: int, rng: random.Random) -> str:
    lines = [f"# genome {i}", "from evolve.harness import session", ""]
    lines += [
        f"PARAM_{k} = {rng.random()!r}  # hyperparameter" for k in range(rng.randint(40, 300))
    ]
    return "\n".join(lines) + "\n"


def build(root: Path, size: int, rng: random.Random) -> tuple[Path, list[str]]:
    path = root / "big"
    archive = RunArchive.create(
        path,
        {"config": {"budget": 300.0, "generations": None}, "fingerprint": {"device": "cuda"}},
        grid=GRID,
        rule=EliteRule(),
    )
    genomes: list[str] = []
    for i in range(GENOMES):  # written directly: bench set-up, not the fsynced production path
        text = source_of(i, rng)
        sha = hashlib.sha256(text.encode()).hexdigest()
        (path / "genomes" / f"{sha}.py").write_text(text)
        genomes.append(sha)
    parent = {
        g: genomes[max(0, i - rng.randint(1, 8))] if i else None for i, g in enumerate(genomes)
    }
    prompt = archive.put_text("You are improving a training script.\n" * 2000)
    reply = archive.put_text("IDEA: use SwiGLU\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")
    t0 = time.perf_counter()
    for start in range(1, size + 1, 5000):
        batch = []
        for n in range(start, min(size, start + 4999) + 1):
            record = fake_record(n, rng, genomes)
            # genomes enter roughly in order, so parents come before children
            record.genome = genomes[min(GENOMES - 1, int(n / size * GENOMES))]
            record.parents = [parent[record.genome]] if parent[record.genome] else []
            record.prompt_sha256, record.response_sha256 = prompt, reply
            batch.append(record)
        archive.insert_many(batch)
    archive.close()
    (path / "llm.json").write_text(
        '{"calls": 12000, "failures": 40, "input_tokens": 9000000, '
        '"output_tokens": 2000000, "cost": 17.3, "max_cost": 20}'
    )
    print(f"built {size} evaluations in {time.perf_counter() - t0:.0f} s", flush=True)
    return path, genomes


def fetch(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        answer.read()
        assert answer.status == 200, (url, answer.status)
    return time.perf_counter() - t


def timed(url: str, label: str, rows: list[tuple[str, float, float]]) -> None:
    cold = fetch(url)
    warm = statistics.median(fetch(url) for _ in range(5))
    rows.append((label, cold, warm))
    print(f"{label:<44} first {cold * 1e3:8.1f} ms   then {warm * 1e3:8.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the archive")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=args.dir))
    rng = random.Random(0)
    server = None
    try:
        path, genomes = build(root, args.size, rng)
        evolve = Path(sys.executable).with_name("evolve")
        server = subprocess.Popen(
            [str(evolve), "serve", "--archive-dir", str(root), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert server.stdout is not None
        base = re.search(r"http://\S+/", server.stdout.readline()).group(0)  # type: ignore[union-attr]
        rows: list[tuple[str, float, float]] = []
        timed(base + "runs/big", f"run page ({args.size} evaluations)", rows)
        with RunArchive.open(path) as reader:
            elite = min(reader.elites(), key=lambda e: e.mean)
        deep = genomes[-1][:12]
        timed(f"{base}runs/big/g/{elite.eval_ids[0]}", "genome page, best elite", rows)
        timed(f"{base}runs/big/g/{deep}", "genome page, newest genome (deep lineage)", rows)
        timed(f"{base}runs/big?sort=params&order=desc&page=2", "run page, sorted, page 2", rows)
        timed(base, "every run", rows)
        timed(base + "api/runs/big/version", "version poll", rows)
        with RunArchive.open(path, writer=True) as writer:  # a shard's worth of new results
            batch = [fake_record(n, rng, genomes) for n in range(args.size + 1, args.size + 501)]
            for record in batch:
                record.parents = []
            writer.insert_many(batch)
        after = fetch(base + "runs/big")
        print(f"{'run page after 500 new evaluations':<44} {after * 1e3:8.1f} ms", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


if __name__ == "__main__":
    main()
