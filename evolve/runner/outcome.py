"""What happened to the genome process, and the human reason when it failed."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.logtail import tail
from evolve.runner.curve import Curve, reason

EXIT_NO_SUBMIT, EXIT_EXPORT_FAILED = 3, 4
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)|SystemExit)\b.*")
_OOM = ("MemoryError", "out of memory", "can't allocate memory", "Cannot allocate memory")


@dataclass
class Outcome:
    events: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # event -> payload + "t" (arrival, our clock)
    exit_code: int | None = None
    max_rss: int | None = None
    # "timeout", "oom", "disk", "interrupted", "pruned"; "lost" if its zygote died
    killed: str | None = None
    protocol_error: str | None = None  # what broke the result channel's protocol (tampering)
    messages: int = 0  # read from the result channel
    peak_memory: int = 0  # the highest PSS + memfd + shm the runner measured
    disk_bytes: int = 0  # the most the runner saw in the genome's folder
    cgroup_dirs: int = 0  # cgroups the runner made for the genome to join
    curve: Curve = field(default_factory=Curve)  # reported loss points, stamped with our clock
    curve_messages: int = 0  # `curve` messages read (capped apart from the others)
    prune: dict[str, Any] | None = None  # the verdict that stopped it (or would have: shadow)

    @property
    def budget_start(self) -> float | None:
        """When the trusted prologue finished (our clock): the training budget starts here."""
        sandbox = self.events.get("sandbox")
        return None if sandbox is None else float(sandbox["t"])

    def at(self, event: str) -> float | None:
        """Seconds from the budget start to when `event` arrived (our clock)."""
        message, start = self.events.get(event), self.budget_start
        return None if message is None or start is None else float(message["t"]) - start

    def training_seconds(self) -> float | None:
        return self.at("training_done")

    def over_budget(self, settings: Any) -> bool:
        """Trained past budget + overrun, or handed in later than the export allowance permits.

        The genome can write `training_done` itself, early; the arrival of the model
        bounds the cheat: export may take at most `grace / 2` after the overrun.
        """
        seconds, submitted = self.training_seconds(), self.at("submitted")
        limit = settings.budget + settings.overrun
        return (seconds is not None and seconds > limit) or (
            submitted is not None and submitted > limit + settings.grace / 2
        )


def failure_reason(outcome: Outcome, settings: Any, log_path: Path) -> tuple[str | None, str]:
    """(status, reason) when the genome failed before scoring; (None, "") when it handed in."""
    if outcome.protocol_error:
        return "invalid", f"the result channel was tampered with: {outcome.protocol_error}; killed"
    if outcome.over_budget(settings):
        seconds = outcome.training_seconds()
        handed = outcome.at("submitted")
        done = f"trained for {seconds:.1f} s" if seconds is not None else "reported no training end"
        handed = f" and handed in at {handed:.1f} s" if handed is not None else ""
        return "over_budget", (
            f"{done}{handed}; the budget is {settings.budget:g} s "
            f"(+{settings.overrun:g} s tolerance, +{settings.grace / 2:g} s to export)"
        )
    if outcome.killed == "lost":
        return (
            "lost",
            "the harness zygote that forked the genome died; the evaluation will be retried",
        )
    if outcome.killed == "pruned" and outcome.prune is not None:
        return "pruned", reason(outcome.prune, settings.budget)
    if "submitted" in outcome.events:
        return None, ""
    if outcome.killed == "interrupted":
        return "interrupted", "the evaluation was cancelled (the run was stopped)"
    if outcome.killed == "oom":
        return (
            "oom",
            f"memory use passed the limit of {settings.mem_limit_bytes / 2**30:.1f} GiB; killed",
        )
    if outcome.killed == "disk":
        return "crashed", (
            f"disk use of the genome's folder passed the limit of "
            f"{settings.max_disk_bytes / 2**30:.1f} GiB or {settings.max_files:,} "
            f"files ({outcome.disk_bytes / 2**30:.2f} GiB seen); killed"
        )
    if outcome.killed == "timeout" and outcome.budget_start is None:
        return (
            "timeout",
            f"timed out: the sandboxed process did not start within {settings.startup:g} s",
        )
    if outcome.killed == "timeout":
        limit = settings.budget + settings.grace
        return (
            "timeout",
            f"timed out: no model handed in within budget + grace ({limit:g} s); killed",
        )
    error = last_error(log_path)
    if error and any(mark in error for mark in _OOM):
        return "oom", f"out of memory: {error}"
    code = outcome.exit_code
    if code == EXIT_NO_SUBMIT:
        return "crashed", "the genome finished without handing in a model (run.submit)"
    if code == EXIT_EXPORT_FAILED:
        return "crashed", error or "the model could not be exported with torch.export"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        return "crashed", error or f"the genome was killed by signal {name}"
    if error:
        return "crashed", error
    return "crashed", f"the genome exited with code {code} without handing in a model"


def last_error(log_path: Path, tail_bytes: int = 8192) -> str:
    """The last 'SomeError: message' line of a log, which is what a human looks for first."""
    for line in reversed(tail(log_path, tail_bytes)[0].splitlines()):
        line = line.strip()
        if line.startswith("evolve:"):
            return line.removeprefix("evolve:").strip()[:500]
        if _ERROR_LINE.match(line):
            return line[:500]
    return ""
