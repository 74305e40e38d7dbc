"""The result record of one evaluation: the same shape for success and failure."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "crashed", "timeout", "invalid", "oom", "over_budget", "interrupted", "lost")
# Statuses that say nothing about the genome itself: the evaluation should be retried.
INFRASTRUCTURE_STATUSES = ("interrupted", "lost")


@dataclass
class EvalResult:
    """One evaluation. Where each figure comes from matters: the genome controls everything
    in its own process, harness code included, so only measurements made outside it
    (by the runner, the kernel or the evaluator) are trusted.

    Trusted: val_bpb and params (the evaluator), training_seconds and wall_seconds (the
    runner's clock), peak_memory_bytes (the runner: the highest of the genome process's
    max RSS from wait4 and its sampled PSS + memfd + /dev/shm), sandbox.
    Reported by the genome, unverified, kept for humans and never a default descriptor:
    steps, tokens, reported_cuda_peak_bytes.
    """

    status: str
    reason: str = ""
    val_bpb: float | None = None
    training_seconds: float | None = None
    wall_seconds: float = 0.0
    steps: int | None = None  # reported by the genome (the `steps=` it passed to submit)
    tokens: int | None = None  # reported: the harness's count, in the genome's own memory
    params: int | None = None
    peak_memory_bytes: int | None = None  # measured by the runner (host memory)
    device: str = ""
    torch_version: str = ""
    dataset: str = ""  # dataset fingerprint
    budget: float = 0.0
    seed: int = 0
    eval_tokens: int = 0
    split: str = "val"  # which held-out split scored it: "val" (selection) or "test" (sealed)
    seq_len: int | None = None
    log_path: str = ""
    sandbox: str = ""  # which isolation layers were active
    slot: str = ""
    hardware: dict[str, Any] = field(default_factory=dict)
    reported_cuda_peak_bytes: int | None = None  # reported: torch.cuda.max_memory_allocated()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {STATUSES}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def comparable(self) -> bool:
        """False when a slot of another hardware class than the run's ran it: keep it out of comparisons."""
        return not off_class(self.hardware)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        """The block `evolve eval` prints, in the spirit of autoresearch's train.py."""

        def fmt(value: Any, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        mem = None if self.peak_memory_bytes is None else self.peak_memory_bytes / 2**20
        cuda = None if self.reported_cuda_peak_bytes is None else self.reported_cuda_peak_bytes / 2**20
        rows = [
            ("status", self.status + (f" ({self.reason})" if self.reason else "")),
            ("val_bpb", fmt(self.val_bpb, ".6f")),
            ("training_seconds", fmt(self.training_seconds, ".1f")),
            ("wall_seconds", fmt(self.wall_seconds, ".1f")),
            ("peak_memory_mb", fmt(mem, ".1f")),
            *([("cuda_peak_mb", fmt(cuda, ".1f") + " (reported by the genome)")]
              if cuda is not None else []),
            ("num_steps", fmt(self.steps, "d") + " (reported by the genome)"),
            ("tokens_trained", fmt(self.tokens, ",d") + " (reported by the genome)"),
            ("num_params", fmt(self.params, ",d")),
            ("device", self.device),
            ("dataset", self.dataset),
            ("log", self.log_path),
        ]
        return "---\n" + "\n".join(f"{k + ':':<18}{v}" for k, v in rows)


def off_class(hardware: dict[str, Any]) -> bool:
    """A result from a slot of another class than the run's: never compared as if equal."""
    return bool(hardware.get("run_class")) and hardware.get("class") != hardware["run_class"]


def sealed(result: dict[str, Any]) -> bool:
    """A result scored on the sealed test split (anything but "val"): it is reported next to the
    val score of the confirmed best, and never selects, ranks or compares anything."""
    return result.get("split", "val") != "val"
