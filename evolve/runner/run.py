"""Run one genome under the harness and return its result record.

Two processes per evaluation, both forked from the slot's pre-warmed zygote
(`evolve.runner.zygotes`), so neither pays for interpreter start and torch
imports: the sandboxed genome (`evolve.harness.child`), then the trusted
evaluator (`evolve.harness.evaluate`). The runner owns the clock: the budget
starts when the child reports that its trusted prologue is done (imports are
overhead, not training), the runner timestamps every message itself, and kills
the whole process group at `budget + grace` whatever the genome does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import select
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.config import RunConfig
from evolve.harness.data import Dataset
from evolve.harness.session import MODEL_FILE
from evolve.harness.settings import EvaluatorSettings, GenomeSettings
from evolve.record import EvalResult
from evolve.runner import channel, sandbox, zygotes
from evolve.runner.curve import PrunePlan
from evolve.runner.logpipe import LogPipe
from evolve.runner.outcome import Outcome, failure_reason

MAX_MESSAGE = 1 << 20  # bytes read from the evaluator's verdict pipe
PASSED_FD = 3  # where the control or verdict pipe lands in the forked process
SPLITS = ("val", "test")


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class RunSettings:
    """How one evaluation runs. Everything here is chosen by the harness, never the genome.

    Defaults a run also has are RunConfig's (`evolve.executors.factory` copies a run's)."""

    budget: float = RunConfig.budget
    grace: float | None = None  # kill at budget + grace; default max(10 s, 10 % of budget)
    overrun: float | None = None  # training may end this late; default max(1 s, 2 %)
    device: str = "cpu"  # "cpu" or "cuda" (the slot's GPU, see cuda_visible)
    cuda_visible: str | None = None
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    eval_tokens: int = RunConfig.eval_tokens
    export_batch: int = 8
    mem_limit_bytes: int | None = field(default_factory=lambda: int(_total_memory() * 0.8))
    max_procs: int = 256
    max_file_bytes: int = 4 << 30  # RLIMIT_FSIZE, never above max_disk_bytes
    max_disk_bytes: int = RunConfig.max_disk_bytes  # the genome's folder, polled by the runner
    max_files: int = RunConfig.max_files  # files and folders in the genome's folder
    max_log_bytes: int = RunConfig.max_log_bytes  # the genome's stdout+stderr kept (plus a tail)
    eval_timeout: float | None = None  # default max(60 s, budget / 2)
    startup: float = (
        120.0  # fork and trusted prologue may take this long (zygote start not counted)
    )
    seed: int = 0
    slot: str = "cpu0"
    split: str = "val"  # "val" scores for selection; "test" scores the sealed test split
    prune: PrunePlan | None = None  # stop a child whose reported loss is behind (engine.pruning)
    max_source_bytes: int = RunConfig.max_source_bytes  # bigger: invalid (no recitals)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        self.grace = self.grace if self.grace is not None else max(10.0, 0.1 * self.budget)
        self.overrun = self.overrun if self.overrun is not None else max(1.0, 0.02 * self.budget)
        if self.eval_timeout is None:
            self.eval_timeout = max(60.0, self.budget / 2)


def run_genome(
    source: str,
    dataset: Dataset,
    settings: RunSettings,
    workdir: Path,
    log_path: Path,
    cancel: threading.Event | None = None,
) -> EvalResult:
    """Evaluate `source` on `dataset`; the record looks the same for success and failure.

    Setting `cancel` stops the evaluation early (status `interrupted`, to be retried).
    Never raises: whatever the genome does ends as its record, and a fault of the
    runner itself (a bug, a full disk on the host) ends as `lost`, which the engine
    retries a few times before it keeps the record.
    """
    wall_start = time.monotonic()
    try:
        return _run_genome(source, dataset, settings, workdir, log_path, cancel)
    except Exception as exc:  # noqa: BLE001 - infrastructure, never the genome (see above)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as log:
                log.write("\n--- evolve runner fault ---\n" + traceback.format_exc())
        except OSError:
            pass
        text = " ".join(str(exc).split())[:300]
        reason = (
            f"the runner failed ({type(exc).__name__}: {text}),"
            " a fault of the harness, not of the genome; the evaluation will be retried"
        )
        return _unscored("lost", reason, settings, dataset, log_path, wall_start)


def _unscored(
    status: str,
    reason: str,
    settings: RunSettings,
    dataset: Dataset,
    log_path: Path,
    wall_start: float,
) -> EvalResult:
    """The result of an evaluation that ended before the evaluator: the run's settings, no score."""
    return EvalResult(
        status=status,
        reason=reason,
        log_path=str(log_path),
        slot=settings.slot,
        budget=settings.budget,
        seed=settings.seed,
        dataset=dataset.fingerprint,
        eval_tokens=settings.eval_tokens,
        split=settings.split,
        wall_seconds=time.monotonic() - wall_start,
    )


def _run_genome(
    source: str,
    dataset: Dataset,
    settings: RunSettings,
    workdir: Path,
    log_path: Path,
    cancel: threading.Event | None,
) -> EvalResult:
    cancel = cancel or threading.Event()
    wall_start = time.monotonic()
    refused = _refuse_before_running(source, dataset, settings)
    if refused:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"evolve: not run: {refused}\n")
        return _unscored("invalid", refused, settings, dataset, log_path, wall_start)
    hashes = sandbox.harness_hashes()
    home, evaldir = workdir / "genome", workdir / "eval"
    for path in (home / "tmp", evaldir / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    for stale in (home / MODEL_FILE, home / ("partial." + MODEL_FILE)):
        stale.unlink(missing_ok=True)  # a reused workdir must not score an old model
    (home / "genome.py").write_text(source)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cpu = not settings.device.startswith("cuda")
    mem_limit = settings.mem_limit_bytes if cpu else None  # CUDA reserves huge address space
    # What both processes are told; each gets its own typed settings (evolve.harness.settings).
    common = {
        "device": settings.device,
        "threads": settings.threads,
        "vocab_size": dataset.vocab_size,
        "export_batch": settings.export_batch,
        "mem_limit": mem_limit,
        "sealed": tuple(dataset.sealed),
        "max_file_bytes": min(settings.max_file_bytes, settings.max_disk_bytes),
    }
    try:
        zygote = zygotes.get(settings.threads, settings.cuda_visible, hashes)
        outcome, fence_layers = _run_child(
            zygote, dataset, settings, home, log_path, common, cancel
        )
        status, reason = failure_reason(outcome, settings, log_path)
        heldout = dataset.test_path if settings.split == "test" else dataset.val_path
        token_bytes = dataset.token_bytes_path
        eval_settings = EvaluatorSettings(
            **common,
            heldout_path=str(heldout),
            split=settings.split,
            eval_tokens=settings.eval_tokens,
            verdict_fd=PASSED_FD,
            token_bytes_path=str(token_bytes) if token_bytes else None,
        )
        reply = (
            {}
            if status == "lost"
            else _evaluate(
                zygote, evaldir, eval_settings, outcome, status, settings, home / MODEL_FILE, cancel
            )
        )
    except zygotes.ZygoteError as exc:
        reason = f"{exc}; the evaluation will be retried"
        return _unscored("lost", reason, settings, dataset, log_path, wall_start)
    _append(log_path, evaldir / "evaluator.log")
    result = _record(outcome, status, reason, reply, settings, dataset, log_path, fence_layers)
    if cancel.is_set() and result.status != "ok":
        result.status, result.reason = (
            "interrupted",
            "the evaluation was cancelled (the run was stopped)",
        )
    changed = [
        name for name, digest in sandbox.harness_hashes().items() if hashes.get(name) != digest
    ]
    if changed:
        result.status, result.reason = (
            "invalid",
            f"harness files were modified: {', '.join(changed)}",
        )
        result.val_bpb = result.params = None
    result.wall_seconds = time.monotonic() - wall_start
    return result


def _refuse_before_running(source: str, dataset: Dataset, settings: RunSettings) -> str:
    """Why this genome must not run at all ('' when it may)."""
    size = len(source.encode())
    if size > settings.max_source_bytes:
        return (
            f"the genome's source is {size:,} bytes, over the cap of "
            f"{settings.max_source_bytes:,} (max_source_bytes): a genome that big could "
            "carry held-out text; make it smaller, or raise the cap with --max-source-bytes"
        )
    if settings.split == "test" and dataset.test_path is None:
        return f"dataset {dataset.name} has no test split; prepare it again with this version"
    return ""


def _run_child(
    zygote: zygotes.Zygote,
    dataset: Dataset,
    settings: RunSettings,
    home: Path,
    log_path: Path,
    common: dict[str, Any],
    cancel: threading.Event,
) -> tuple[Outcome, list[str]]:
    """Start the sandboxed genome, watch it, and leave nothing of it running."""
    fence = sandbox.Fence.create(settings.max_procs, settings.mem_limit_bytes)
    ctl_read, ctl_write = os.pipe()
    clock_start = time.monotonic()
    genome_settings = GenomeSettings(
        **common,
        budget=settings.budget,
        seed=settings.seed,
        control_fd=PASSED_FD,
        train_path=str(dataset.train_path),
        max_procs=settings.max_procs,
        cgroups=tuple(str(p) for p in fence.dirs),
    )
    env = sandbox.clean_env(home, settings.threads, settings.cuda_visible, genome_settings.to_env())
    logs = None
    try:
        logs = LogPipe(log_path, settings.max_log_bytes)
        with open(os.devnull, "rb") as devnull:
            child = zygote.spawn(
                "child",
                ["evolve.harness.child", "genome.py"],
                home,
                env,
                devnull.fileno(),
                logs.write_fd,
                ctl_write,
            )
        os.close(ctl_write)
        ctl_write = -1
        logs.close_write()
        try:
            outcome = _supervise(child, ctl_read, clock_start, settings, fence, logs, home, cancel)
        finally:
            child.stop()
        if fence.oom_kills() and "submitted" not in outcome.events and not outcome.killed:
            outcome.killed = "oom"  # the kernel enforced the cgroup's memory limit
        return outcome, fence.layers + ["mem-watch", "disk-watch", "log-cap"]
    finally:
        fence.kill_all()
        if logs is not None:
            logs.close()  # after every writer is dead
        for fd in (ctl_read, ctl_write):
            if fd >= 0:
                os.close(fd)


def _supervise(
    child: zygotes.Child,
    ctl: int,
    start: float,
    settings: RunSettings,
    fence: sandbox.Fence,
    logs: LogPipe,
    home: Path,
    cancel: threading.Event,
) -> Outcome:
    """Watch the genome until it hands in a model, exits, breaks the protocol, or runs out of
    time, memory or disk."""
    outcome = Outcome(cgroup_dirs=len(fence.dirs))
    plan = None if settings.prune is None else dataclasses.replace(settings.prune, decided=set())
    buffer, reading = b"", True
    next_mem_check = next_disk_check = 0.0
    while True:
        now = time.monotonic()
        # The budget runs from the end of the trusted prologue (the `sandbox` report).
        begun = outcome.budget_start
        deadline = start + (
            settings.startup if begun is None else begun + settings.budget + settings.grace
        )
        if now >= deadline or cancel.is_set():
            outcome.killed = "interrupted" if cancel.is_set() else "timeout"
            break
        watched = ([ctl] if reading else []) + ([logs.read_fd] if logs.open else [])
        ready = select.select(watched, [], [], min(0.2, deadline - now))[0] if watched else []
        if not watched:
            time.sleep(0.05)
        if logs.read_fd in ready:
            logs.pump()
        if ctl in ready:
            chunk = os.read(ctl, 65536)
            reading = bool(chunk)
            buffer = _take_messages(buffer + chunk, outcome, start)
            if outcome.protocol_error or "submitted" in outcome.events:
                break
        if child.poll() is not None:
            break
        if plan is not None and begun is not None and _prune(plan, outcome, now - start - begun):
            break
        if now >= next_mem_check:
            next_mem_check = now + 0.5
            members = fence.pids() or sandbox.group_members(child.pid)
            used = sandbox.memory_bytes(members)
            outcome.peak_memory = max(outcome.peak_memory, used)
            if settings.mem_limit_bytes and used > settings.mem_limit_bytes:
                outcome.killed = "oom"
                break
        if now >= next_disk_check:
            took = time.monotonic()
            used, entries = sandbox.disk_usage(home, settings.max_files)
            took = time.monotonic() - took
            next_disk_check = now + max(0.25, 20 * took)  # at most 5 % of a core on counting
            outcome.disk_bytes = max(outcome.disk_bytes, used)
            if used > settings.max_disk_bytes or entries > settings.max_files:
                outcome.killed = "disk"
                break
    # The zygote kills the group before it reaps, while the group id cannot be reused.
    outcome.exit_code, outcome.max_rss = child.stop(), child.max_rss
    if child.lost:
        outcome.killed = "lost"
    if "submitted" not in outcome.events and not outcome.protocol_error:
        _take_messages(buffer + _drain(ctl), outcome, start)  # what it wrote before it exited
    return outcome


def _prune(plan: PrunePlan, outcome: Outcome, trained: float) -> bool:
    """Judge the checkpoints that have passed; True to stop the genome now (mode "on").

    Only the genome's own curve is read, and only to stop that genome: a genome that
    reports nothing, or a good loss, runs on and is scored by the evaluator."""
    if outcome.prune is not None or not plan.due(trained):
        return False
    verdict = plan.judge(outcome.curve.points, trained)
    if verdict is None:
        return False
    outcome.prune = {**verdict, "mode": plan.mode, "stopped": round(trained, 3)}
    if plan.mode == "on":
        outcome.killed = "pruned"
        return True
    return False


def _drain(fd: int, limit: int = MAX_MESSAGE) -> bytes:
    """What is in a pipe now, without waiting for writers that may never close it."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < limit:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _take_messages(buffer: bytes, outcome: Outcome, start: float) -> bytes:
    """Parse complete lines from the control pipe; stamp them with our own clock.

    Any line the honest harness would not write (see `channel`) sets
    `outcome.protocol_error`: the evaluation is invalid. `training_done` keeps its
    last report, so a genome cannot report the end of training early and keep
    training; `sandbox` and `submitted` come once.
    """
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        if outcome.protocol_error or "submitted" in outcome.events:
            return b""
        try:
            event, message = channel.parse(line)
            if event == "curve":
                outcome.curve_messages += 1
                if outcome.curve_messages > channel.MAX_CURVE_MESSAGES:
                    raise channel.ProtocolError(
                        f"more than {channel.MAX_CURVE_MESSAGES} curve messages"
                    )
            else:
                outcome.messages += 1
            if outcome.messages > channel.MAX_MESSAGES:
                raise channel.ProtocolError(f"more than {channel.MAX_MESSAGES} messages")
            if event != "training_done" and event in outcome.events:
                raise channel.ProtocolError(f"a second {event!r} message")
            if event != "sandbox" and "sandbox" not in outcome.events:
                raise channel.ProtocolError(f"{event!r} before the sandbox was set up")
        except channel.ProtocolError as exc:
            outcome.protocol_error = str(exc)
            return b""
        if event == "curve":  # stamped with our clock, in seconds of training
            trained = time.monotonic() - start - (outcome.budget_start or 0.0)
            outcome.curve.add(trained, message["step"], message["loss"])
            continue
        outcome.events[event] = {**message, "t": time.monotonic() - start}
    if len(rest) > channel.MAX_LINE:
        outcome.protocol_error = f"a message of more than {channel.MAX_LINE} bytes"
        return b""
    return rest


def _evaluate(
    zygote: zygotes.Zygote,
    evaldir: Path,
    config: EvaluatorSettings,
    outcome: Outcome,
    status: str | None,
    settings: RunSettings,
    model: Path,
    cancel: threading.Event,
) -> dict[str, Any]:
    """Hand the model to a fresh evaluator (or tell it there is none) and read its verdict."""
    request = b"\n"  # an empty line: nothing to score, report the device only
    missing = None
    if status is None:
        if model.is_file() and not model.is_symlink():
            seq_len = outcome.events["submitted"].get("seq_len")
            # The secret picks the held-out windows and the probes' cuts; only the
            # evaluator sees it, after the genome has exited.
            request = (
                json.dumps(
                    {"model": str(model), "seq_len": seq_len, "secret": secrets.token_hex(32)}
                )
                + "\n"
            ).encode()
        else:
            missing = "the genome reported a hand-in but left no model file"
    verdict_read, verdict_write = os.pipe()
    request_read, request_write = os.pipe()
    os.write(request_write, request)  # a line, far below the pipe's capacity
    os.close(request_write)
    env = sandbox.clean_env(evaldir, settings.threads, settings.cuda_visible, config.to_env())
    try:
        with open(evaldir / "evaluator.log", "wb") as log:
            evaluator = zygote.spawn(
                "evaluate",
                ["evolve.harness.evaluate"],
                evaldir,
                env,
                request_read,
                log.fileno(),
                verdict_write,
            )
        os.close(verdict_write)
        verdict_write = -1
        deadline = time.monotonic() + settings.eval_timeout
        try:
            while evaluator.wait(0.25) is None:  # in short waits, to notice `cancel`
                if cancel.is_set():
                    return {}
                if time.monotonic() > deadline:
                    return {
                        "status": "invalid",
                        "reason": f"evaluation took longer than {settings.eval_timeout:.0f} s",
                    }
        finally:
            evaluator.stop()
        lines = _drain(verdict_read).decode(errors="replace").strip().splitlines()
    finally:
        for fd in (verdict_read, verdict_write, request_read):
            if fd >= 0:
                os.close(fd)
    try:
        reply = json.loads(lines[-1]) if lines else {}
    except ValueError:
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    if missing:
        reply.update(status="invalid", reason=missing)
    return reply


def _record(
    outcome: Outcome,
    status: str | None,
    reason: str,
    reply: dict[str, Any],
    settings: RunSettings,
    dataset: Dataset,
    log_path: Path,
    runner_layers: list[str],
) -> EvalResult:
    done = outcome.events.get("training_done", {})
    measured = max(outcome.max_rss or 0, outcome.peak_memory)
    result = EvalResult(
        status="ok",
        budget=settings.budget,
        seed=settings.seed,
        dataset=dataset.fingerprint,
        eval_tokens=settings.eval_tokens,
        split=settings.split,
        log_path=str(log_path),
        slot=settings.slot,
        device=str(reply.get("device_name", settings.device)),
        torch_version=str(reply.get("torch_version", "")),
        training_seconds=outcome.training_seconds(),
        steps=done.get("steps"),
        tokens=done.get("tokens"),  # reported; checked by `channel`
        reported_cuda_peak_bytes=done.get("cuda_peak_bytes"),
        curve=outcome.curve.as_list(),
        prune=outcome.prune,
        peak_memory_bytes=measured or None,
        seq_len=outcome.events.get("submitted", {}).get("seq_len"),
        sandbox=_layers(
            outcome.events.get("sandbox", {}),
            runner_layers,
            outcome.cgroup_dirs,
            reply.get("layers"),
        ),
        hardware={
            k: reply[k]
            for k in ("device_name", "cuda_version", "device_count", "threads", "memory_bytes")
            if k in reply
        }
        | {"kind": settings.device},
    )
    if status is None:
        status, reason = reply.get("status"), str(reply.get("reason", ""))
        value = reply.get("val_bpb")
        if status not in ("ok", "invalid"):
            status, reason = "invalid", "the evaluator gave no verdict (see the log)"
        elif status == "ok" and not (isinstance(value, float) and math.isfinite(value)):
            status, reason = "invalid", f"the evaluator returned no finite val_bpb ({value!r})"
    result.status, result.reason = status, reason
    if status == "pruned":  # trained until the runner stopped it (our clock)
        result.training_seconds = outcome.prune["stopped"] if outcome.prune else None
    if status == "ok":
        result.val_bpb, result.params = float(reply["val_bpb"]), _int(reply.get("params"))
        context = _int(reply.get("context"))  # counted in the scored graph: the genome's claim
        result.seq_len = context if context and context > 0 else result.seq_len  # only named it
    return result


def _append(log_path: Path, part: Path) -> None:
    """Add the evaluator's own output to the genome's log, under a heading."""
    try:
        text = part.read_bytes()
    except OSError:
        return
    if text.strip():
        with open(log_path, "ab") as log:
            log.write(b"\n--- evaluator ---\n" + text)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) else None


def _layers(
    layers: dict[str, Any], runner_layers: list[str], cgroup_dirs: int, evaluator: Any = None
) -> str:
    """The isolation layers that were active, as the prologue reported them (before any genome
    code ran), as the runner held them from outside, and as the evaluator sealed itself before
    the handed-in graph ran (`eval-…`)."""
    parts = ["pgroup", "env"]
    if layers.get("landlock"):
        parts.append(f"landlock-v{layers['landlock']}")
    if layers.get("seccomp"):
        parts.append("seccomp")
    cgroups = [name for name in runner_layers if name.startswith("cgroup-")]
    if cgroups and layers.get("cgroups") == cgroup_dirs:  # the child joined every one
        parts += cgroups
    parts += [f"rlimit-{name}" for name in layers.get("rlimits", [])]
    if layers.get("caps_dropped"):
        parts.append("nocaps")
    parts += [name for name in runner_layers if not name.startswith("cgroup-")]
    if isinstance(evaluator, list):
        parts += [f"eval-{name}" for name in evaluator if name in _EVAL_LAYERS]
    return ",".join(parts)


_EVAL_LAYERS = {f"landlock-v{abi}" for abi in range(1, 32)} | {"seccomp"}
