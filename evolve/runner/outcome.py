"""What happened to the genome process, and the human reason when it failed."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_NO_SUBMIT, EXIT_EXPORT_FAILED = 3, 4
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)|SystemExit)\b.*")


@dataclass
class Outcome:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # event -> payload + "at"
    exit_code: int | None = None
    max_rss: int | None = None
    killed: str | None = None  # "timeout" or "oom" when the runner killed it
    end: float = 0.0

    def training_seconds(self) -> float | None:
        done = self.events.get("training_done")
        return None if done is None else float(done["at"])

    def over_budget(self, settings: Any) -> bool:
        seconds = self.training_seconds()
        return seconds is not None and seconds > settings.budget + settings.overrun


def failure_reason(outcome: Outcome, settings: Any, log_path: Path) -> tuple[str | None, str]:
    """(status, reason) when the genome failed before scoring; (None, "") when it handed in."""
    if outcome.over_budget(settings):
        return "over_budget", (f"trained for {outcome.training_seconds():.1f} s; the budget is "
                               f"{settings.budget:g} s (+{settings.overrun:g} s tolerance)")
    if "submitted" in outcome.events:
        return None, ""
    if outcome.killed == "interrupted":
        return "interrupted", "the evaluation was cancelled (run stopped)"
    if outcome.killed == "oom":
        return "oom", f"memory use passed the limit of {settings.mem_limit_bytes / 2**30:.1f} GiB"
    if outcome.killed == "timeout":
        limit = settings.budget + settings.grace
        return "timeout", f"no model handed in within budget + grace ({limit:g} s); killed"
    error = last_error(log_path)
    if error and ("MemoryError" in error or "out of memory" in error):
        return "oom", error
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
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - tail_bytes))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        line = line.strip()
        if _ERROR_LINE.match(line) or line.startswith("evolve:"):
            return line[:500]
    return ""
