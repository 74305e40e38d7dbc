"""What runs on a Ray worker node: a probe of the node, and one evaluation.

Plain functions (the coordinator wraps them with `ray.remote`), so this module
needs no Ray to import. The genome source and the run settings arrive with the
task; the node prepares the dataset itself and must arrive at the coordinator's
fingerprint, or its scores would not be comparable. The record and the log text
go back to the coordinator, which owns the archive.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from evolve.errors import UserError
from evolve.harness.data import Dataset, prepare
from evolve.logtail import tail
from evolve.record import EvalResult
from evolve.runner import RunSettings, run_genome, sandbox
from evolve.runner.devices import cpu_name, cuda_names, hardware_facts

LOG_LIMIT = 8 << 20  # bytes of log sent back; a genome that prints more keeps its last 8 MiB


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the coordinator runs: a node must match it to take part."""

    data: str  # the dataset spec, e.g. "builtin" or an absolute path
    tokenizer: str
    fingerprint: str
    harness: dict[str, str]  # file -> sha256 of the trusted harness


@functools.lru_cache(maxsize=4)
def _prepared(data: str, tokenizer: str) -> Dataset:
    return prepare(data, tokenizer=tokenizer)


def mismatch(expect: Expect) -> tuple[Dataset | None, str]:
    """This node's dataset, or why this node cannot give comparable results."""
    node = platform.node()
    try:
        dataset = _prepared(expect.data, expect.tokenizer)
    except UserError as exc:
        return None, f"node {node} cannot prepare the dataset: {exc.what}"
    if dataset.fingerprint != expect.fingerprint:
        return None, (
            f"node {node} prepared dataset {expect.data!r} with fingerprint "
            f"{dataset.fingerprint}, the coordinator has {expect.fingerprint}"
        )
    changed = sorted(
        name
        for name, digest in sandbox.harness_hashes().items()
        if expect.harness.get(name) != digest
    )
    if changed:
        return None, f"node {node} runs a different evolve harness ({', '.join(changed)} differ)"
    return dataset, ""


def probe(expect: Expect, gpus: int, threads: int) -> dict[str, Any]:
    """The node's hardware facts, and the reason it cannot take part ('' if it can)."""
    names = cuda_names(None) if gpus else []
    device, name = ("cuda", ", ".join(sorted(set(names)))) if names else ("cpu", cpu_name())
    _, problem = mismatch(expect)
    if gpus and not names:
        problem = problem or f"Ray says node {platform.node()} has GPUs, but torch sees none"
    return {"facts": hardware_facts(device, name, threads), "device_name": name, "problem": problem}


def evaluate(source: str, settings: RunSettings, eval_id: str, expect: Expect) -> tuple[dict, str]:
    """Run one genome on this node; returns (record as a dict, log text)."""
    dataset, problem = mismatch(expect)
    if dataset is None:
        return EvalResult(status="lost", reason=problem, slot=settings.slot).to_dict(), ""
    if settings.device == "cuda":  # Ray pinned this task to a GPU through our environment
        settings = dataclasses.replace(
            settings, cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES", "")
        )
    work = Path(tempfile.mkdtemp(prefix=f"evolve-{eval_id}-"))
    try:
        result = _run_cancellable(source, dataset, settings, work / "run", work / "log.txt")
        return result.to_dict(), _tail(work / "log.txt")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_cancellable(
    source: str, dataset: Dataset, settings: RunSettings, workdir: Path, log: Path
) -> EvalResult:
    """run_genome in a thread: ray.cancel() raises KeyboardInterrupt here, and we stop it cleanly."""
    cancel = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = run_genome(source, dataset, settings, workdir, log, cancel=cancel)
        except BaseException as exc:  # handed to the task's thread, which raises it to Ray
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"evaluate-{settings.slot}")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _tail(path: Path) -> str:
    text, cut = tail(path, LOG_LIMIT)
    return f"[first {cut} bytes of the log cut]\n{text}" if cut else text
