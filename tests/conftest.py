"""Shared fixtures: a small prepared corpus, a fast genome, and a runner with short limits."""

from __future__ import annotations

import os
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolve.harness import landlock
from evolve.harness.data import Dataset, prepare
from evolve.record import EvalResult
from evolve.runner import RunSettings, run_genome
from evolve.runner.sandbox import Fence
from evolve.testkit.tiny import TINY, set_constants

ROOT = Path(__file__).resolve().parents[1]
GENOMES = Path(__file__).resolve().parent / "genomes"
SECRET = "sk-test-do-not-leak-7f3a9c"
LANDLOCK_ABI = landlock.abi_version()


def _fence_works() -> bool:
    fence = Fence.create(8)
    fence.kill_all()
    return fence.path is not None


HAVE_FENCE = _fence_works()
needs_landlock = pytest.mark.skipif(LANDLOCK_ABI == 0, reason="the kernel has no Landlock")
needs_scoped_signals = pytest.mark.skipif(
    LANDLOCK_ABI < 6, reason="signal scoping needs Landlock ABI 6 (Linux 6.12)"
)
needs_fence = pytest.mark.skipif(
    not HAVE_FENCE, reason="no writable cgroup pids controller: fork bombs and setsid() escape"
)


def genome(name: str, **values: object) -> str:
    """A genome from tests/genomes/, with its constants set."""
    return set_constants((GENOMES / name).read_text(), **values)


@pytest.fixture(scope="session")
def seed_source() -> str:
    """The real seed genome, train.py, made tiny and fast."""
    return set_constants((ROOT / "train.py").read_text(), **TINY)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """512 KiB of standard-library source, prepared into a private cache."""
    base = tmp_path_factory.mktemp("data")
    text, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_text(encoding="utf-8", errors="replace")
        text.append(chunk)
        size += len(chunk)
        if size > 512 << 10:
            break
    corpus = base / "corpus.txt"
    corpus.write_text("\n\n".join(text))
    return prepare(str(corpus), cache_dir=base / "cache")


@dataclass
class Run:
    result: EvalResult
    log: str
    workdir: Path


@pytest.fixture
def evaluate(dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a genome with short limits; a secret sits in our environment the whole time."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    count = 0

    def run(
        source: str, budget: float = 2.0, cancel: threading.Event | None = None, **overrides: object
    ) -> Run:
        nonlocal count
        count += 1
        settings = {
            "budget": budget,
            "grace": 4.0,
            "threads": 1,
            "eval_tokens": 2048,
            "mem_limit_bytes": 2 << 30,
            "max_procs": 64,
            "eval_timeout": 60.0,
            **overrides,
        }
        workdir, log_path = tmp_path / f"work{count}", tmp_path / "logs" / f"{count}.log"
        result = run_genome(source, dataset, RunSettings(**settings), workdir, log_path, cancel)
        log = log_path.read_text(errors="replace")
        print(f"{result.status}: {result.reason}")  # shown when a test fails (or with -s)
        assert SECRET not in log, "the genome saw the parent's OPENAI_API_KEY"
        assert os.environ["OPENAI_API_KEY"] == SECRET
        return Run(result, log, workdir)

    return run


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(workdir: Path) -> list[int]:
    """Live processes working inside `workdir` (what a genome left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue  # gone, a zombie, or not ours to see
            if cwd.startswith(str(workdir)):
                found.append(int(entry))
    return found
