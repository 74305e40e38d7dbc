"""One real `evolve start` with an LLM that misbehaves in every way the issue lists.

A local OpenAI-compatible server scripts the replies; the run trains real tiny
genomes and must finish, with every child's prompt and response stored and
the LLM's troubles counted in the run's llm.json and shown in the summary.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from evolve.archive import RunArchive
from evolve.config import RunConfig
from evolve.engine import start
from evolve.engine.loop import AUTO_START
from evolve.executors.factory import build_executor
from evolve.testkit.llm_server import FakeLLM, drop, fail, say, tweaker
from evolve.testkit.tiny import tiny_genome

SEED = tiny_genome()


def edit(search: str, replace: str, idea: str) -> str:
    return f"IDEA: {idea}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


A = edit("WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.05", "halve the weight decay")
A_SOURCE = SEED.replace("WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.05")
B_SOURCE = SEED.replace("WARMUP_FRAC = 0.05", "WARMUP_FRAC = 0.1")
B = f"IDEA: warm up twice as long\n```python\n{B_SOURCE}```\n"
C = edit("GRAD_CLIP = 1.0", "GRAD_CLIP = 0.5", "clip gradients harder")

# Proposals run one at a time (concurrency 1), so the script is consumed in this order.
SCRIPT = [
    fail(500),
    fail(500),  # child 1, try 1: a 5xx that outlasts the retry -> counted failure
    fail(429),
    say(A),  # child 1, try 2: rate limited, then a good diff
    say("I would lower the weight decay; that usually helps."),  # child 2: prose, no code
    say(edit("DROPOUT = 0.1", "DROPOUT = 0.0", "no dropout")),  # SEARCH does not match
    say(edit("GRAD_CLIP = 1.0", "GRAD_CLIP = (1.0", "broken")),  # syntax error
    say(f"IDEA: again\n```python\n{A_SOURCE}```\n"),  # a duplicate of child 1
    drop(),
    say(B),  # child 2, try 2: dropped connection, then a full rewrite
    say(C, delay=6),
    say(C),  # child 3: slower than the 3 s timeout, then a good diff
]
CONFIG = """
noise_repeats = 1
confirm = 1
[operators]
llm_mutate = 1
[llm]
timeout = 3
max_retries = 1
concurrency = 1
[[llm.models]]
name = "fake-coder"
price_in = 1.0
price_out = 4.0
"""


def corpus(path: Path) -> None:
    text = "".join(
        p.read_text(errors="replace")
        for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("a*.py"))[:6]
    )
    path.write_text(text[:300_000])


def test_a_run_keeps_going_through_every_kind_of_llm_trouble(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tiny.py").write_text(SEED)
    (tmp_path / "run.toml").write_text(CONFIG)
    (tmp_path / "program.md").write_text("# Research program for the test run\nLower val_bpb.\n")
    corpus(tmp_path / "corpus.txt")
    with FakeLLM(SCRIPT) as fake:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "evolve.cli",
                "start",
                "--pop",
                "2",
                "--generations",
                "2",
                "--name",
                "r",
                "--seed-genome",
                "tiny.py",
                "--config",
                "run.toml",
                "--budget",
                "2",
                "--eval-tokens",
                "4096",
                "--devices",
                "cpu:2",
                "--data",
                "corpus.txt",
                "--llm-model",
                "fake-coder",
                "--llm-base-url",
                fake.url,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not fake.script, "the run stopped before the LLM script was used up"
        assert len(fake.requests) == len(SCRIPT)

    assert "LLM: fake-coder" in proc.stderr  # the start-up note names the model and the cap
    assert "LLM 8 calls, 1 failed" in proc.stdout  # the final headline
    run = tmp_path / "archive" / "r"
    stats = json.loads((run / "llm.json").read_text())
    assert (stats["calls"], stats["failures"], stats["errors"]) == (8, 1, {"http_500": 1})
    rejected = stats["rejected"]
    assert (rejected["no_code"], rejected["no_match"], rejected["syntax"]) == (1, 1, 1)
    assert rejected.get("duplicate", 0) + rejected.get("unchanged", 0) == 1
    assert stats["cost"] > 0 and stats["tokens"] == 7 * 1200

    with RunArchive.open(run) as archive:
        records = [r for r in archive.evaluations() if r.result.split == "val"]
        tests = [r for r in archive.evaluations() if r.result.split == "test"]
        assert tests and all(r.operator == "test" for r in tests)  # each confirmed best's
        children = [r for r in records if r.operator == "llm_mutate"]
        # every child was evaluated (its status is the genome's business: a loaded machine
        # can push a tiny genome over its 2 s budget)
        assert len(records) == 4 and not {r.status for r in records} & {"lost", "interrupted"}
        sources = {archive.genome_source(r.genome) for r in children}
        assert {A_SOURCE, B_SOURCE} <= sources and any("GRAD_CLIP = 0.5" in s for s in sources)
        assert {r.idea for r in children} == {
            "halve the weight decay",
            "warm up twice as long",
            "clip gradients harder",
        }
        for record in children:
            prompt = archive.text(record.prompt_sha256)
            response = archive.text(record.response_sha256)
            assert "Research program for the test run" in prompt  # program.md of the cwd
            assert "N_EMBD = 32" in prompt and response.startswith(f"IDEA: {record.idea}")


def test_auto_concurrency_keeps_enough_llm_calls_in_flight(tmp_path: Path, monkeypatch) -> None:
    """Slow LLM, fast evaluations: the engine measures both and runs more than its starting
    number of LLM calls at once, so that slots do not wait (and never more than its cap)."""
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(SEED)
    (tmp_path / "program.md").write_text("Lower val_bpb.\n")
    corpus(tmp_path / "corpus.txt")
    with FakeLLM(responder=tweaker(latency=6.0)) as fake:
        config = RunConfig(
            name="auto",
            archive_dir=str(tmp_path / "archive"),
            seed_genomes=["tiny.py"],
            pop=4,
            time_limit=20,
            budget=1.0,
            eval_tokens=2048,
            device="cpu",
            devices="cpu:2",
            data="corpus.txt",
            noise_repeats=1,
            confirm=1,
            operators={"llm_mutate": 1.0},
            llm={"models": [{"name": "fake"}], "base_url": fake.url, "timeout": 30},
        ).validate()
        prepared = start(config, build_executor)
        prepared.run_to_end()
        workers = prepared.engine.proposal_workers()
    cap = max(16, 2 * 2)  # 2 slots
    assert AUTO_START < fake.max_active <= cap, (fake.max_active, workers)
    assert AUTO_START < workers <= cap


def test_ctrl_c_does_not_wait_for_slow_llm_calls(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C while LLM calls are in flight exits at once; the abandoned calls are counted at
    their worst-case cost (the server may bill them), and it says how to resume."""
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tiny.py").write_text(SEED)
    (tmp_path / "program.md").write_text("Lower val_bpb.\n")
    (tmp_path / "run.toml").write_text(
        "noise_repeats = 1\nconfirm = 1\n[operators]\nllm_mutate = 1\n"
        '[[llm.models]]\nname = "fake"\nprice_in = 1.0\nprice_out = 4.0\n'
    )
    corpus(tmp_path / "corpus.txt")
    with FakeLLM(responder=tweaker(latency=120.0)) as fake:
        args = [
            "--pop",
            "2",
            "--generations",
            "2",
            "--name",
            "r",
            "--seed-genome",
            "tiny.py",
            "--budget",
            "1",
            "--eval-tokens",
            "2048",
            "--devices",
            "cpu:1",
            "--data",
            "corpus.txt",
            "--config",
            "run.toml",
            "--llm-base-url",
            fake.url,
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "evolve.cli", "start", *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not fake.requests and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert fake.requests, "no LLM call was made"
        time.sleep(1.0)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted
    assert proc.returncode == 0, err[-3000:]
    assert took < 20, f"Ctrl-C took {took:.0f} s: it waited for the LLM"
    assert "evolve resume" in out
    stats = json.loads((tmp_path / "archive" / "r" / "llm.json").read_text())
    assert stats["abandoned"] == len(fake.requests) and stats["cost"] > 0
    assert not stats.get("stopped")  # abandoning calls does not stop the LLM for the resume
