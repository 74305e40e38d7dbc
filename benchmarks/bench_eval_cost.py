"""CPU seconds of the evaluator's work for one model, by step, measured in process.

Wall-clock overhead (bench_overhead.py) needs a quiet machine; CPU seconds of one
thread do not, so this is what compares evaluator versions on a shared one. Steps:
prepare (vet the archive, draw the secret windows and probes), warm (export, load
and score the trusted program), score (load the graph, one forward per batch plus
one probe forward per batch).

    python benchmarks/bench_eval_cost.py [--genome train.py] [--repeats 3] [--data builtin]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evolve.config import RunConfig
from evolve.harness import evaluate
from evolve.harness.data import prepare
from evolve.harness.settings import EvaluatorSettings


def evaluator_settings(dataset, eval_tokens: int, export_batch: int) -> EvaluatorSettings:
    """What the runner would tell the evaluator; the process fields are unused in process."""
    token_bytes = dataset.token_bytes_path
    return EvaluatorSettings(
        device="cpu",
        threads=1,
        vocab_size=dataset.vocab_size,
        export_batch=export_batch,
        mem_limit=None,
        max_file_bytes=1 << 30,
        sealed=(),
        heldout_path=str(dataset.val_path),
        split="val",
        eval_tokens=eval_tokens,
        verdict_fd=-1,
        token_bytes_path=str(token_bytes) if token_bytes else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome", default="train.py")
    parser.add_argument("--data", default=RunConfig.data)
    parser.add_argument("--eval-tokens", type=int, default=RunConfig.eval_tokens)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "genome"}
    source = Path(args.genome).read_text()
    exec(compile(source.split("\ndef main()")[0], args.genome, "exec"), namespace)
    seq_len = int(namespace["SEQ_LEN"])
    dataset = prepare(args.data)
    model = namespace["GPT"](dataset.vocab_size).eval()
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        program = torch.export.export(model, (torch.zeros(8, seq_len, dtype=torch.long),))
        path = Path(tmp) / "model.pt2"
        torch.export.save(program, path)
        config = evaluator_settings(dataset, args.eval_tokens, export_batch=8)
        times: dict[str, list[float]] = {"prepare": [], "warm": [], "score": []}
        for _ in range(args.repeats):
            request = {"model": str(path), "seq_len": seq_len, "secret": secrets.token_hex(32)}
            start = time.process_time()
            prepared = evaluate.prepare(request, config)
            times["prepare"].append(time.process_time() - start)
            start = time.process_time()
            evaluate.warm("cpu")
            times["warm"].append(time.process_time() - start)
            start = time.process_time()
            evaluate.score(prepared, config)
            times["score"].append(time.process_time() - start)
    parts = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.genome} (seq_len {seq_len}), {args.eval_tokens} tokens, 1 thread, median CPU s: "
        + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        + f", total {sum(parts.values()):.2f}"
    )


if __name__ == "__main__":
    main()
