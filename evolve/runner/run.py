"""Run one genome under the harness and return its result record.

Two processes per evaluation, started together so the evaluator's imports
overlap training: the sandboxed genome (`evolve.harness.child`) and the trusted
evaluator (`evolve.harness.evaluate`). The runner owns the clock: it starts the
budget when it spawns the genome, timestamps the genome's messages itself, and
kills the whole process group at `budget + grace` whatever the genome does.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.harness.data import Dataset
from evolve.harness.session import MODEL_FILE
from evolve.record import EvalResult
from evolve.runner import sandbox
from evolve.runner.outcome import Outcome, failure_reason

_HARNESS_HASHES = sandbox.harness_hashes()


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class RunSettings:
    """How one evaluation runs. Everything here is chosen by the harness, never the genome."""

    budget: float = 300.0
    grace: float | None = None  # kill at budget + grace; default max(10 s, 10 % of budget)
    overrun: float | None = None  # training may end this late; default max(1 s, 2 %)
    device: str = "cpu"  # "cpu" or "cuda" (the slot's GPU, see cuda_visible)
    cuda_visible: str | None = None
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    eval_tokens: int = 65536
    export_batch: int = 8
    mem_limit_bytes: int | None = field(default_factory=lambda: int(_total_memory() * 0.8))
    max_procs: int = 256
    max_file_bytes: int = 4 << 30
    eval_timeout: float | None = None  # default max(60 s, budget / 2)
    seed: int = 0
    slot: str = "cpu0"

    def __post_init__(self) -> None:
        self.grace = self.grace if self.grace is not None else max(10.0, 0.1 * self.budget)
        self.overrun = self.overrun if self.overrun is not None else max(1.0, 0.02 * self.budget)
        if self.eval_timeout is None:
            self.eval_timeout = max(60.0, self.budget / 2)


def _python(module: str) -> list[str]:
    # -I: ignore PYTHON* variables and user site; -u: the log is written as it happens.
    return [sys.executable, "-I", "-u", "-m", module]


def run_genome(source: str, dataset: Dataset, settings: RunSettings, workdir: Path,
               log_path: Path, cancel: threading.Event | None = None) -> EvalResult:
    """Evaluate `source` on `dataset`; the record looks the same for success and failure."""
    wall_start = time.monotonic()
    home, evaldir = workdir / "genome", workdir / "eval"
    for path in (home / "tmp", evaldir / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    (home / "genome.py").write_text(source)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fence = sandbox.Fence.create(settings.max_procs)
    ctl_read, ctl_write = os.pipe()
    cpu = not settings.device.startswith("cuda")
    common = {"device": settings.device, "threads": settings.threads, "vocab_size": dataset.vocab_size,
              "export_batch": settings.export_batch}
    eval_config = {**common, "val_path": str(dataset.val_path), "model_dir": str(home),
                   "eval_tokens": settings.eval_tokens,
                   "token_bytes_path": str(dataset.token_bytes_path or "")}
    with open(log_path, "ab") as log:
        evaluator = subprocess.Popen(
            _python("evolve.harness.evaluate"), cwd=evaldir, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            env=sandbox.clean_env(evaldir, settings.threads, settings.cuda_visible,
                                  {"EVOLVE_EVAL": json.dumps(eval_config)}))
        clock_start = time.monotonic()
        child_config = {**common, "budget": settings.budget, "clock_start": clock_start,
                        "seed": settings.seed, "control_fd": ctl_write,
                        "train_path": str(dataset.train_path),
                        "mem_limit": settings.mem_limit_bytes if cpu else None,
                        "max_procs": settings.max_procs, "max_file_bytes": settings.max_file_bytes,
                        "cgroup": str(fence.path) if fence.path else None}
        child = subprocess.Popen(
            _python("evolve.harness.child") + ["genome.py"], cwd=home, stdout=log,
            stderr=subprocess.STDOUT, pass_fds=(ctl_write,), start_new_session=True,
            env=sandbox.clean_env(home, settings.threads, settings.cuda_visible,
                                  {"EVOLVE_SESSION": json.dumps(child_config)}))
    os.close(ctl_write)
    try:
        outcome = _supervise(child, ctl_read, clock_start, settings, fence, cancel)
    finally:
        os.close(ctl_read)
        sandbox.kill_group(child.pid)
        fence.kill_all()
    reply = _evaluate(evaluator, outcome, settings, home / MODEL_FILE)
    result = _record(outcome, reply, settings, dataset, log_path)
    result.wall_seconds = time.monotonic() - wall_start
    return result


def _supervise(child: subprocess.Popen, ctl: int, start: float, settings: RunSettings,
               fence: sandbox.Fence, cancel: threading.Event | None = None) -> Outcome:
    """Watch the genome until it hands in a model, exits, or runs out of time or memory."""
    outcome = Outcome()
    deadline = start + settings.budget + settings.grace
    buffer, reading, next_mem_check = b"", True, 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            outcome.killed = "timeout"
            break
        if cancel is not None and cancel.is_set():
            outcome.killed = "interrupted"
            break
        if reading:
            ready, _, _ = select.select([ctl], [], [], min(0.2, deadline - now))
            if ready:
                chunk = os.read(ctl, 65536)
                reading = bool(chunk)
                buffer = _take_messages(buffer + chunk, outcome, start)
                if "submitted" in outcome.events:
                    break
        else:
            time.sleep(0.05)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            outcome.exit_code, outcome.max_rss = child.returncode, usage.ru_maxrss * 1024
            break
        if now >= next_mem_check:
            next_mem_check = now + 0.5
            members = fence.pids() or sandbox.group_members(child.pid)
            if settings.mem_limit_bytes and sandbox.rss_bytes(members) > settings.mem_limit_bytes:
                outcome.killed = "oom"
                break
    if outcome.exit_code is None:
        sandbox.kill_group(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        outcome.exit_code, outcome.max_rss = child.returncode, usage.ru_maxrss * 1024
    outcome.end = time.monotonic()
    return outcome


def _take_messages(buffer: bytes, outcome: Outcome, start: float) -> bytes:
    """Parse complete JSON lines from the control pipe; stamp them with our own clock."""
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        try:
            message = json.loads(line)
            event = str(message.pop("event"))
        except (ValueError, KeyError, AttributeError):
            continue  # garbage on the control pipe proves nothing; ignore it
        if event not in outcome.events:  # first report wins: later ones cannot rewrite time
            outcome.events[event] = {**message, "at": time.monotonic() - start}
    return rest


def _evaluate(evaluator: subprocess.Popen, outcome: Outcome, settings: RunSettings,
              model: Path) -> dict[str, Any]:
    """Hand the model to the evaluator (or tell it there is none) and read its verdict."""
    request = b"\n"  # an empty line: nothing to score, exit quietly
    submitted = outcome.events.get("submitted")
    if submitted and not outcome.over_budget(settings) and model.is_file():
        request = (json.dumps({"model": str(model), "seq_len": submitted.get("seq_len")}) + "\n").encode()
    try:
        out, _ = evaluator.communicate(request, timeout=settings.eval_timeout)
    except subprocess.TimeoutExpired:
        sandbox.kill_group(evaluator.pid)
        evaluator.wait()
        return {"status": "invalid", "reason": f"evaluation took longer than {settings.eval_timeout:.0f} s"}
    finally:
        sandbox.kill_group(evaluator.pid)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"status": "invalid", "reason": "the evaluator gave no verdict (see the log)"}


def _record(outcome: Outcome, reply: dict[str, Any], settings: RunSettings, dataset: Dataset,
            log_path: Path) -> EvalResult:
    done = outcome.events.get("training_done", {})
    layers = outcome.events.get("sandbox", {})
    result = EvalResult(
        status="ok", budget=settings.budget, seed=settings.seed, dataset=dataset.fingerprint,
        eval_tokens=settings.eval_tokens, log_path=str(log_path), slot=settings.slot,
        device=reply.get("device_name", settings.device), torch_version=reply.get("torch_version", ""),
        training_seconds=done.get("at"), steps=_int(done.get("steps")), tokens=_int(done.get("tokens")),
        peak_memory_bytes=_int(done.get("cuda_peak_bytes")) or outcome.max_rss,
        seq_len=_int(outcome.events.get("submitted", {}).get("seq_len")),
        sandbox=_layers(layers),
        hardware={k: reply[k] for k in ("device_name", "cuda_version", "device_count", "threads")
                  if k in reply} | {"kind": settings.device})
    changed = [name for name, digest in sandbox.harness_hashes().items()
               if _HARNESS_HASHES.get(name) != digest]
    if changed:
        result.status, result.reason = "invalid", f"harness files were modified: {', '.join(changed)}"
        return result
    status, reason = failure_reason(outcome, settings, log_path)
    if status is None:
        status, reason = reply.get("status", "invalid"), reply.get("reason", "")
        if status == "ok" and "val_bpb" not in reply:
            status, reason = "invalid", "the evaluator gave no verdict (see the log)"
    result.status, result.reason = status, reason
    if status == "ok":
        result.val_bpb, result.params = float(reply["val_bpb"]), int(reply["params"])
    return result


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _layers(layers: dict[str, Any]) -> str:
    parts = ["pgroup", "env"]
    if layers.get("landlock"):
        parts.append(f"landlock-v{layers['landlock']}")
    if layers.get("cgroup"):
        parts.append("cgroup")
    parts += [f"rlimit-{name}" for name in layers.get("rlimits", [])]
    if layers.get("caps_dropped"):
        parts.append("nocaps")
    return ",".join(parts)
