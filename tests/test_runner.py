"""The runner on the real seed genome: an `ok` record with every field filled, and the
causality probe, which must neither accept a peeking model nor reject an honest one."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evolve.harness import evaluate as evaluator
from evolve.harness import scoring
from evolve.record import EvalResult
from evolve.runner import RunSettings, run_genome, sandbox, zygotes
from tests.conftest import (
    HAVE_FENCE,
    LANDLOCK_ABI,
    SECRET,
    TINY,
    alive,
    genome,
    leftovers,
    set_constants,
)

BUDGET = 8.0


@pytest.fixture(scope="module")
def seed_run(dataset, seed_source, tmp_path_factory):
    """The seed genome trained for BUDGET seconds, with a secret in our environment.

    The genome also prints how it was started: interpreter flags, parent, open fds.
    """
    base = tmp_path_factory.mktemp("seed")
    hashes = sandbox.harness_hashes()
    source = seed_source.replace(
        "    run = session()\n",
        "    run = session()\n    import os, stat, sys\n"
        "    def is_socket(fd):\n"
        "        try:\n"
        "            return stat.S_ISSOCK(os.fstat(fd).st_mode)\n"
        "        except OSError:\n"
        "            return False\n"
        "    print('flags', sys.flags.isolated, sys.flags.ignore_environment, 'ppid', os.getppid(),"
        " 'sockets', sum(map(is_socket, range(1024))), 'fd3', os.readlink('/proc/self/fd/3'))\n",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", SECRET)
        settings = RunSettings(
            budget=BUDGET,
            grace=6.0,
            threads=1,
            eval_tokens=2048,
            mem_limit_bytes=4 << 30,
            max_procs=64,
            slot="seed",
        )
        result = run_genome(source, dataset, settings, base / "work", base / "seed.log")
    assert sandbox.harness_hashes() == hashes
    return result, (base / "seed.log").read_text(), settings


def test_seed_genome_ok(seed_run, dataset):
    result, log, _ = seed_run
    assert result.status == "ok", (result.reason, log[-3000:])
    assert result.reason == ""
    assert math.isfinite(result.val_bpb) and 0 < result.val_bpb < 8.0
    assert result.params > 0 and result.steps > 0
    assert result.tokens >= result.steps * TINY["BATCH_SIZE"] * TINY["SEQ_LEN"]
    assert BUDGET - 0.5 < result.training_seconds <= BUDGET + 1.0
    assert result.wall_seconds > result.training_seconds
    assert result.peak_memory_bytes > 0
    assert result.seq_len == TINY["SEQ_LEN"]
    assert result.device and result.torch_version == torch.__version__
    assert result.hardware["kind"] == "cpu" and result.hardware["threads"] == 1
    assert result.dataset == dataset.fingerprint and result.eval_tokens == 2048
    assert result.budget == BUDGET
    assert ("landlock" in result.sandbox) == (LANDLOCK_ABI > 0)
    assert ("cgroup" in result.sandbox) == HAVE_FENCE
    assert "rlimit-as" in result.sandbox
    if os.geteuid() == 0:
        assert "nocaps" in result.sandbox
    assert "step 10 | loss" in log and SECRET not in log


def test_record_shape_is_the_same_for_failure(seed_run, evaluate):
    ok = seed_run[0]
    failed = evaluate(genome("syntax_error.txt")).result
    assert failed.status == "crashed"
    assert ok.to_dict().keys() == failed.to_dict().keys()
    for record in (ok, failed):
        assert EvalResult.from_dict(json.loads(record.to_json())) == record
    assert failed.device == ok.device and failed.torch_version == ok.torch_version
    assert failed.sandbox == ok.sandbox


def test_genome_is_forked_from_the_slot_zygote(seed_run):
    """Forked from a `python -I -u -m evolve.harness.zygote` that holds no secret; the genome
    inherits no socket (no way to talk to the zygote), and its control pipe is fd 3."""
    _, log, settings = seed_run
    line = next(line for line in log.splitlines() if line.startswith("flags "))
    _, isolated, no_env, _, ppid, _, sockets, _, fd3 = line.split()
    assert (isolated, no_env) == ("1", "1")
    zygote = zygotes.get(settings.threads, settings.cuda_visible, sandbox.harness_hashes())
    assert int(ppid) == zygote.pid
    cmdline = Path(f"/proc/{zygote.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:5] == [b"-I", b"-u", b"-m", b"evolve.harness.zygote"]
    assert SECRET.encode() not in Path(f"/proc/{zygote.pid}/environ").read_bytes()
    assert sockets == "0" and fd3.startswith("pipe:")


def test_reused_workdir_does_not_score_an_old_model(evaluate, tmp_path, dataset):
    """A genome that only claims a hand-in must not get the previous run's model scored."""
    stale = tmp_path / "work1" / "genome"
    stale.mkdir(parents=True)
    (stale / "model.pt2").write_bytes(b"an old model")
    run = evaluate(genome("claim_only.py"))
    assert run.result.status == "invalid"
    assert "no model file" in run.result.reason


def test_cancel_stops_a_running_genome(evaluate):
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    run = evaluate(genome("hang.py"), budget=120.0, cancel=cancel)
    assert run.result.status == "interrupted", run.result.reason
    assert time.monotonic() - start < 60  # far from budget + grace
    assert not leftovers(run.workdir)


def test_nothing_survives_a_killed_runner(dataset, tmp_path):
    """A search killed with SIGKILL (no cleanup runs) leaves no genome or evaluator behind."""
    (tmp_path / "dataset.pkl").write_bytes(pickle.dumps(dataset))
    script = (
        f"import pickle, pathlib\n"
        f"from evolve.runner import RunSettings, run_genome\n"
        f"base = pathlib.Path({str(tmp_path)!r})\n"
        f"run_genome((base / 'hang.py').read_text(), pickle.loads((base / 'dataset.pkl')"
        f".read_bytes()), RunSettings(budget=120, threads=1), base / 'work', base / 'log')\n"
    )
    running = "run = session()\nprint('running', flush=True)\n"
    (tmp_path / "hang.py").write_text(genome("hang.py").replace("run = session()\n", running))
    runner_process = subprocess.Popen([sys.executable, "-c", script])
    log = tmp_path / "log"
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "running" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        running = leftovers(tmp_path / "work")
        assert len(running) == 1, "the genome is not running"
        zygote = _parent(running[0])
    finally:
        runner_process.kill()
        runner_process.wait()
    deadline = time.monotonic() + 10
    while (leftovers(tmp_path / "work") or alive(zygote)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers(tmp_path / "work")
    assert not alive(zygote), "the runner's zygote outlived it"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


# ---------------------------------------------------------------------------
# The causality probe, in process: exact models, no training needed


def _seed_model(source: str, vocab: int = 256) -> torch.nn.Module:
    namespace: dict = {"__name__": "seed"}
    exec(compile(source, "train.py", "exec"), namespace)
    return namespace["GPT"](vocab).eval()


def _tokens(rows: int = 8, length: int = 32) -> torch.Tensor:
    text = Path(evaluator.__file__).read_bytes()
    return torch.tensor(list(text[: rows * length])).view(rows, length)


def _probe_batches(model: torch.nn.Module, x: torch.Tensor, batches: int = 32) -> None:
    """The probe as an evaluation runs it: once per batch, each time with other secret cuts."""
    for seed in range(batches):
        scoring.check_causal(model, x, 256, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("config", [TINY, {}], ids=["tiny", "full-size"])
def test_probe_accepts_the_seed_genome(config):
    source = set_constants((Path(__file__).parents[1] / "train.py").read_text(), **config)
    model = _seed_model(source)
    length = config.get("SEQ_LEN", 128)
    with torch.no_grad():
        for p in model.parameters():  # beyond init scale, as after training
            p.add_(torch.randn_like(p) * 0.3)
        _probe_batches(model, _tokens(8, length), batches=4)


def test_probe_rejects_non_causal_attention(seed_source):
    model = _seed_model(seed_source.replace("is_causal=True", "is_causal=False"))
    with torch.no_grad(), pytest.raises(evaluator.Rejected, match="non-causal"):
        _probe_batches(model, _tokens())


class _Peek(torch.nn.Module):
    """Predicts the next token by reading it, at positions >= `start` only."""

    def __init__(self, start: int, inflate: bool = False) -> None:
        super().__init__()
        self.start, self.inflate = start, inflate

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, 256)
        nxt = idx.roll(-1, dims=1)
        peek = torch.nn.functional.one_hot(nxt, 256).float() * 20
        logits[:, self.start : -1] += peek[:, self.start : -1]
        if self.inflate:  # shift-invariant for the loss, but a huge max(|logit|)
            logits[0, 0] += 1e6
        return logits


@pytest.mark.parametrize(
    "model",
    [_Peek(0), _Peek(16), _Peek(24), _Peek(2, inflate=True)],
    ids=["everywhere", "second-half", "last-quarter", "inflated-logits"],
)
def test_probe_rejects_peeking(model):
    with pytest.raises(evaluator.Rejected, match="non-causal"):
        _probe_batches(model, _tokens())


def test_probe_rejects_batch_mixing():
    class Mix(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            mean = torch.nn.functional.one_hot(idx, 256).float().mean(0, keepdim=True)
            return mean.expand(idx.shape[0], -1, -1).cumsum(1)

    with pytest.raises(evaluator.Rejected, match="across the batch"):
        _probe_batches(Mix(), _tokens())
