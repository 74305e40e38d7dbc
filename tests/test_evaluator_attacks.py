"""Attacks on the score through the graph a genome hands in (issue 10): each ends `invalid` with
a clear reason, or is scored as honestly as it deserves.

1. a graph that reads the held-out split itself (aten::from_file);
2. a model that peeks where fixed probe cuts cannot see, and mixes rows other than row 0;
3. a model that keeps a call counter in a buffer, honest while probed, cheating afterwards;
4. a model that recites the start of the held-out text.
Plus the evaluator's own guarantees: the operator allowlist, no state between calls, a
sealed process that can open no file, secret stratified windows, the source cap, the split.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from evolve.harness import evaluate as evaluator
from evolve.harness import graph_rules, scoring, syscalls, windows
from evolve.harness.landlock import abi_version
from evolve.harness.vet import Rejected
from evolve.testkit.tiny import TINY
from tests.conftest import ROOT, genome, needs_landlock, set_constants

MUON_SMALL = {"SEQ_LEN": 32, "BATCH_SIZE": 8, "DEPTH": 1, "MODEL_DIM": 64, "HEAD_DIM": 32}


def _invalid(run, *words: str) -> None:
    result = run.result
    assert result.status == "invalid", (result.status, result.reason, run.log[-2000:])
    assert result.val_bpb is None
    for word in words:
        assert word in result.reason, result.reason


def _recital(tokens: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(bytes(np.asarray(tokens, dtype=np.uint8)), 9)).decode()


# ---------------------------------------------------------------------------
# The four holes, in real evaluations


def test_graph_that_reads_a_file_is_refused(evaluate):
    run = evaluate(genome("read_heldout_file.py"))
    _invalid(run, "aten.from_file", "reads a file")


def test_peeking_between_fixed_cuts_is_caught(evaluate):
    run = evaluate(genome("peek_between_cuts.py"))
    _invalid(run)
    assert "non-causal" in run.result.reason or "across the batch" in run.result.reason


def test_state_kept_between_calls_is_refused(evaluate):
    run = evaluate(genome("stateful_probe_dodger.py"))
    _invalid(run, "aten.add_", "keeps state between calls", "calls")


def test_reciting_the_start_of_the_heldout_text_does_not_pay(evaluate, dataset):
    """Carrying the first tokens of the held-out split: the evaluator scored exactly those
    before; now it scores secret windows of the whole pool, and the recital buys nothing."""
    start = np.load(dataset.val_path)[:4096]
    run = evaluate(genome("recite.py", TABLE=_recital(start)))
    assert run.result.status == "ok", (run.result.reason, run.log[-2000:])
    assert run.result.val_bpb > 4.0  # uniform guessing is 8.0
    # The same model on the first tokens, as the evaluator used to score them: far better (the
    # first NGRAM - 1 positions of each window have no context to look up, hence not 0).
    program = graph_rules.load_model(str(run.workdir / "genome" / "model.pt2"))
    first = np.asarray(start[: 2048 + 1], dtype=np.int64)
    x = torch.from_numpy(first[:-1]).view(-1, 32)
    y = torch.from_numpy(first[1:]).view(-1, 32)
    with torch.inference_mode():
        logp = program.module()(x[:8]).log_softmax(-1)
    nats = -logp.gather(-1, y[:8, :, None]).mean()
    assert float(nats) / np.log(2) < 2.5


def test_sealed_test_split_is_scored_when_asked(evaluate, dataset):
    """A recital of the whole (small) test split scores ~0 on it and nothing on val: the
    runner scores the split it is asked for, and says which."""
    table = _recital(np.load(dataset.test_path))
    source = genome("recite.py", TABLE=table)
    on_test = evaluate(source, split="test", eval_tokens=1024).result
    on_val = evaluate(source, eval_tokens=1024).result
    assert (on_test.status, on_val.status) == ("ok", "ok"), (on_test.reason, on_val.reason)
    assert (on_test.split, on_val.split) == ("test", "val")
    print(on_test.val_bpb, on_val.val_bpb)
    assert on_test.val_bpb < 4.0 < on_val.val_bpb and on_test.val_bpb + 2 < on_val.val_bpb


# ---------------------------------------------------------------------------
# Honest genomes still pass


def test_honest_modern_model_is_accepted(evaluate):
    """SDPA, RMSNorm, rotary, soft-capped logits and bf16 autocast inside forward."""
    run = evaluate(genome("honest_modern.py"), budget=3.0)
    assert run.result.status == "ok", (run.result.reason, run.log[-2000:])
    assert run.result.val_bpb < 8.0 and run.result.split == "val"
    assert run.result.seq_len == 32  # counted in the scored graph, not taken from the genome
    layers = run.result.sandbox.split(",")  # the evaluator's own seal, as it reported it
    assert any(layer.startswith("eval-landlock-v") for layer in layers) == bool(abi_version())
    assert ("eval-seccomp" in layers) == (syscalls.pyseccomp is not None)


def test_oversized_genome_is_invalid_before_it_runs(evaluate, seed_source):
    source = seed_source + "\n# " + "x" * (64 << 10) + "\n"
    run = evaluate(source)
    _invalid(run, "over the cap of 65,536", "--max-source-bytes")
    assert run.result.wall_seconds < 1.0 and not run.workdir.exists()
    assert "not run" in run.log
    assert evaluate(source, max_source_bytes=1 << 20, budget=1.0).result.status == "ok"


# ---------------------------------------------------------------------------
# The allowlist and the state rule, on real exported programs


def _export(model: torch.nn.Module, length: int = 32) -> object:
    with torch.no_grad():
        return torch.export.export(model.eval(), (torch.zeros(8, length, dtype=torch.long),))


def _genome_class(path: Path, name: str, **constants: object) -> type:
    namespace: dict = {"__name__": "genome"}
    exec(compile(set_constants(path.read_text(), **constants), str(path), "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("seed", ["train.py", "gpt_muon.py", "trusted"])
def test_allowlist_accepts_the_seeds(seed):
    if seed == "train.py":
        program = _export(_genome_class(ROOT / "train.py", "GPT", **TINY)(256))
    elif seed == "gpt_muon.py":
        program = _export(_genome_class(ROOT / "genomes" / "gpt_muon.py", "GPT", **MUON_SMALL)(256))
    else:  # the evaluator's own warm-up model: attention, norms, rotary, softcap, autocast
        program = torch.export.load(evaluator._trusted_program("cpu"))
    graph_rules.check_graph(program)


class _Random(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.rand(*idx.shape, 256)


class _Uninitialised(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.empty(*idx.shape, 256) * 0


class _Counter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return torch.zeros(*idx.shape, 256) + self.calls


class _AttentionDropout(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.one_hot(idx, 256).float()[:, None]
        return torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1)[:, 0]


def test_check_graph_accepts_dropout_in_eval_mode():
    model = torch.nn.Sequential(
        torch.nn.Embedding(256, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 256)
    )
    graph_rules.check_graph(_export(model))


class _WritesInput(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx.zero_()
        return torch.zeros(*idx.shape, 256)


@pytest.mark.parametrize(
    "model, words",
    [
        (_Random(), "global random state"),
        (_Uninitialised(), "uninitialised memory"),
        (_AttentionDropout(), "dropout_p=0.1, which draws random numbers"),
        (_Counter(), "add_.* writes into b_calls: it keeps state between calls"),
        (_WritesInput(), "zero_.* writes into idx"),
    ],
    ids=["random", "uninitialised", "attention-dropout", "buffer-state", "input-state"],
)
def test_check_graph_refuses(model, words):
    with pytest.raises(Rejected, match=words):
        graph_rules.check_graph(_export(model))


# ---------------------------------------------------------------------------
# The probe and the windows


def test_probe_checks_every_row_for_batch_mixing():
    """Row 0 stays clean; rows 1.. read the row before them. The old probe watched row 0."""

    class MixLater(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            logits = torch.nn.functional.one_hot(idx, 256).float()
            logits[1:] += logits[:-1].clone()
            return logits

    x = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    with pytest.raises(Rejected, match="across the batch"):
        for seed in range(8):
            scoring.check_causal(MixLater(), x, 256, rng=np.random.default_rng(seed))


def test_windows_are_secret_stratified_and_exact():
    pool = np.arange(100_000) % 251
    one = windows.plan(pool, 1000, 32, 8, np.random.default_rng(1))
    again = windows.plan(pool, 1000, 32, 8, np.random.default_rng(1))
    other = windows.plan(pool, 1000, 32, 8, np.random.default_rng(2))
    assert all(
        torch.equal(a.x, b.x) and torch.equal(a.cuts, b.cuts)
        for a, b in zip(one, again, strict=True)
    )
    assert not torch.equal(one[0].x, other[0].x)
    assert sum(int(b.mask.sum()) for b in one) == 1000
    assert all(torch.equal(b.y[:, :-1], b.x[:, 1:]) for b in one)
    starts = windows.stratified_starts(100_000 - 32, 32, np.random.default_rng(3))
    width = (100_000 - 32) / 32
    assert all(i * width <= s < (i + 1) * width for i, s in enumerate(starts))
    for b in one:  # every probe replaces some rows wholly and cuts the others inside the row
        assert int((b.cuts == 0).sum()) == 2 and int(b.cuts.max()) < 32
    small = windows.plan(np.arange(100) % 7, 1000, 32, 8, np.random.default_rng(1))  # overlaps
    assert sum(int(b.mask.sum()) for b in small) == 1000
    with pytest.raises(Rejected, match="longer than the held-out split"):
        windows.plan(np.arange(20), 100, 32, 8, np.random.default_rng(1))


@needs_landlock
def test_sealed_evaluator_can_open_no_file(tmp_path, dataset):
    """After the seal, neither Python nor an operator inside a graph can open a file; the
    trusted warm-up has made the load-and-score path work without any."""
    script = f"""
import numpy as np, torch
from evolve.harness import evaluate as e
from evolve.harness import graph_rules, scoring, windows
archive = e._trusted_program("cpu")
e.warm("cpu")
e.seal("cpu")
import socket
from evolve.harness import syscalls
denied = syscalls.deny_sockets()
print("seccomp", denied)
sockets = [lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
           lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)]
for attempt in [lambda: open({str(dataset.val_path)!r}, "rb"),
                lambda: torch.from_file({str(dataset.val_path)!r}, size=16, dtype=torch.uint8),
                lambda: open("/etc/hostname"), *(sockets if denied else [])]:
    try:
        attempt()
        print("LEAKED")
    except Exception as exc:
        print("blocked", type(exc).__name__)
program = graph_rules.load_model(archive)
batches = windows.plan(np.arange(256) % 16, 64, 4, 2, np.random.default_rng(0))
print("scored", scoring.score_batches(program.module(), batches, 16)[1])
"""
    out = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "LEAKED" not in out.stdout, out.stdout
    sockets_denied = "seccomp True" in out.stdout  # where pyseccomp and libseccomp exist
    assert out.stdout.count("blocked") == 3 + 2 * sockets_denied, (out.stdout, out.stderr[-2000:])
    assert "scored 64" in out.stdout, out.stderr[-2000:]


@needs_landlock
def test_sealed_evaluator_on_cuda_keeps_libraries_not_data(tmp_path, dataset):
    """The CUDA seal (here on CPU) leaves the libraries CUDA may load late readable, and the
    held-out text, its folder and the sealed paths closed."""
    script = f"""
from evolve.harness import evaluate as e
e.seal("cuda", {list(dataset.sealed)!r})
for path in ({str(dataset.val_path)!r}, {str(dataset.test_path)!r}, {str(dataset.train_path)!r},
             "/etc/hostname"):
    try:
        open(path, "rb").close()
        print("open", path)
    except PermissionError:
        print("blocked", path)
"""
    out = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    for path in (dataset.val_path, dataset.test_path, dataset.train_path):
        assert f"blocked {path}" in out.stdout, (out.stdout, out.stderr[-2000:])
    assert "open /etc/hostname" in out.stdout


def test_eval_command_takes_the_source_cap_and_the_split(tmp_path, monkeypatch, seed_source):
    """`evolve eval --max-source-bytes N --split test`: an oversized genome is refused before
    it runs (exit 1, the reason in the record); a bad split is bad input (exit 2)."""
    from click.testing import CliRunner

    from evolve.cli import cli

    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "corpus.txt").write_text(seed_source * 40)
    (tmp_path / "genome.py").write_text(seed_source)
    args = [
        "eval",
        str(tmp_path / "genome.py"),
        "--data",
        str(tmp_path / "corpus.txt"),
        "--device",
        "cpu",
        "--json",
        "--workdir",
        str(tmp_path / "work"),
    ]
    result = CliRunner().invoke(cli, [*args, "--max-source-bytes", "100", "--split", "test"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.output)
    assert record["status"] == "invalid" and "over the cap of 100" in record["reason"]
    assert record["split"] == "test"
    assert CliRunner().invoke(cli, [*args, "--split", "train"]).exit_code == 2


class _WritesViewOfBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(4, 256))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.table[0].add_(1.0)  # through a view
        return torch.zeros(*idx.shape, 256) + self.table[0]


class _InPlaceOnIntermediates(torch.nn.Module):
    """What honest models write: masked_fill_ on scores, inplace ReLU, slice assignment."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(256, 8)
        self.act = torch.nn.ReLU(inplace=True)
        self.head = torch.nn.Linear(8, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.act(self.embed(idx))
        scores = x @ x.transpose(1, 2)
        scores.masked_fill_(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        x = scores.softmax(-1) @ x
        logits = self.head(x)
        logits[:, :, 0] = 0.0
        return logits


def test_in_place_operators_on_intermediates_are_fine_but_not_on_state():
    graph_rules.check_graph(_export(_InPlaceOnIntermediates()))
    with pytest.raises(Rejected, match="writes into b_table"):
        graph_rules.check_graph(_export(_WritesViewOfBuffer()))
