"""The records of one evaluation: what the runner measured (EvalResult, the same shape for
success and failure) and what the archive stores about it (Evaluation)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How an evaluation ended: stored, printed and compared as the plain strings it stands for
    (a str mixin rather than 3.11's StrEnum, since Python 3.10 is supported)."""

    OK = "ok"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    OOM = "oom"
    OVER_BUDGET = "over_budget"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    PRUNED = "pruned"  # the child's own reported curve stopped it: an unsuccessful child

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def infrastructure(self) -> bool:
        """Says nothing about the genome itself (a stopped run, a lost slot): retry it.
        "pruned" is not one: it never is retried."""
        return self in (Status.INTERRUPTED, Status.LOST)

    @classmethod
    def parse(cls, value: str) -> Status:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown status {value!r}; expected one of {known}") from None


class _StatusField:
    """EvalResult.status: always a Status, whether built or assigned later (the runner downgrades
    a result's status after building it) from a Status or its string; unknown: ValueError."""

    def __get__(self, obj: Any, owner: type | None = None) -> Status:
        if obj is None:  # the dataclass asking for a default: there is none, status is required
            raise AttributeError("status")
        return obj.__dict__["_status"]

    def __set__(self, obj: Any, value: Status | str) -> None:
        obj.__dict__["_status"] = Status.parse(value)


# Operators whose record evaluates an existing genome again rather than a new one: "reeval"
# (confirming an elite), "race" (a re-evaluated challenger) and "test" (the sealed test-split
# score of the confirmed best). Their records are no children and say nothing of a genome's origin.
REPEAT_OPERATORS = frozenset({"reeval", "race", "test"})


@dataclass
class EvalResult:
    """One evaluation. Where each figure comes from matters: the genome controls everything
    in its own process, harness code included, so only measurements made outside it
    (by the runner, the kernel or the evaluator) are trusted.

    Trusted: val_bpb and params (the evaluator), training_seconds and wall_seconds (the
    runner's clock), peak_memory_bytes (the runner: the highest of the genome process's
    max RSS from wait4 and its sampled PSS + memfd + /dev/shm), sandbox.
    Reported by the genome, unverified, kept for humans and never a default descriptor:
    steps, tokens, reported_cuda_peak_bytes, curve.
    """

    status: Status = _StatusField()  # type: ignore[assignment]  # a str is accepted, checked
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
    # reported: [training seconds (the runner's clock), step, loss] from run.log(step=, loss=);
    # thinned to at most evolve.runner.curve.MAX_POINTS. May stop the genome, never score it.
    curve: list[list[float]] = field(default_factory=list)
    # the pruning verdict: {"checkpoint", "at", "loss", "reference", "margin", "source", "mode"};
    # mode "on": it stopped this run (status pruned); "shadow": it would have, nothing was stopped
    prune: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def comparable(self) -> bool:
        """False when a slot of another hardware class than the run's ran it: keep it out of comparisons."""
        return not off_class(self.hardware)

    @property
    def sealed(self) -> bool:
        """Scored on the sealed test split (anything but "val"): it is reported next to the
        val score of the confirmed best, and never selects, ranks or compares anything."""
        return self.split != "val"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value  # a plain str in JSON, pickles and comparisons
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        names = _field_names(cls)
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        """The block `evolve eval` prints, in the spirit of autoresearch's train.py."""

        def fmt(value: Any, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        mem = None if self.peak_memory_bytes is None else self.peak_memory_bytes / 2**20
        cuda = (
            None if self.reported_cuda_peak_bytes is None else self.reported_cuda_peak_bytes / 2**20
        )
        rows = [
            ("status", self.status + (f" ({self.reason})" if self.reason else "")),
            ("val_bpb", fmt(self.val_bpb, ".6f")),
            ("training_seconds", fmt(self.training_seconds, ".1f")),
            ("wall_seconds", fmt(self.wall_seconds, ".1f")),
            ("peak_memory_mb", fmt(mem, ".1f")),
            *(
                [("cuda_peak_mb", fmt(cuda, ".1f") + " (reported by the genome)")]
                if cuda is not None
                else []
            ),
            ("num_steps", fmt(self.steps, "d") + " (reported by the genome)"),
            ("tokens_trained", fmt(self.tokens, ",d") + " (reported by the genome)"),
            ("num_params", fmt(self.params, ",d")),
            ("device", self.device),
            ("dataset", self.dataset),
            ("log", self.log_path),
        ]
        return "---\n" + "\n".join(f"{k + ':':<18}{v}" for k, v in rows)


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def off_class(hardware: dict[str, Any]) -> bool:
    """A result from a slot of another class than the run's: never compared as if equal."""
    return bool(hardware.get("run_class")) and hardware.get("class") != hardware["run_class"]


@dataclass
class Evaluation:
    """One evaluation as the archive stores it: the schema of every record under `evals/`.

    A stored TinyDB document is exactly `to_dict()`. `from_dict` reads what any earlier version
    wrote: a missing optional key takes its default, a key this version does not know is kept in
    `extra` and written back unchanged (inside `result`, EvalResult.from_dict drops it).

    id           "e000012": its number in the run; also the name of its log (logs/<id>.log)
    genome       sha256 of the genome's source (genomes/<sha256>.py)
    result       what the runner measured (EvalResult.to_dict() on disk); its status is the
                 record's "status", stored beside it for quick filtering
    generation   the generation it was issued in (bookkeeping, see the engine's loop)
    parents      genome hashes it was made from, the main parent first; a repeat names the
                 genome it re-evaluates
    operator     what made it: "seed", "import", a built-in or LLM operator's name, or one of
                 REPEAT_OPERATORS ("reeval", "race", "test") for a genome evaluated again
    idea         the operator's description of the change, whitespace folded, at most 300 chars
    descriptors  the run grid's descriptor values for it (None: not measured)
    cell         its MAP-Elites cell, or None when a descriptor is missing or not finite
    created      when it was stored (unix seconds)
    seq          its position in the run's insertion order (1, 2, ...), set when stored
    decision     what it did to the elites (a Decision value), None when it scored nothing
    prompt_sha256, response_sha256   the LLM's prompt and reply (texts/<sha256>.txt), if any
    origin       an imported genome's provenance: the run and evaluation it came from
    target       an aimed mutation's niche ({"cell": [...], ...}) and "landed": whether the
                 child reached that cell
    """

    id: str
    genome: str
    result: EvalResult
    generation: int = 0
    parents: list[str] = field(default_factory=list)
    operator: str = ""
    idea: str = ""
    descriptors: dict[str, float | None] = field(default_factory=dict)
    cell: list[int] | None = None
    created: float = 0.0
    seq: int = 0
    decision: str | None = None
    prompt_sha256: str | None = None
    response_sha256: str | None = None
    origin: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    OPTIONAL = ("prompt_sha256", "response_sha256", "origin", "target")  # stored only when set

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def val_bpb(self) -> float | None:
        """The score when there is one to use: ok and a finite number (of either split)."""
        value = self.result.val_bpb
        if not self.ok or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def sealed(self) -> bool:
        """Scored on the sealed test split: never selects, ranks or compares anything."""
        return self.result.sealed

    @property
    def comparable(self) -> bool:
        """Measured on the run's hardware class (see EvalResult.comparable)."""
        return self.result.comparable

    @property
    def is_repeat(self) -> bool:
        """A genome evaluated again (REPEAT_OPERATORS): no child, and no genome's origin."""
        return self.operator in REPEAT_OPERATORS

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "generation": self.generation,
            "genome": self.genome,
            "parents": list(self.parents),
            "operator": self.operator,
            "idea": self.idea,
            "status": self.status.value,
            "result": self.result.to_dict(),
            "descriptors": dict(self.descriptors),
            "cell": None if self.cell is None else list(self.cell),
            "created": self.created,
        }
        for name in self.OPTIONAL:
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return {**data, **self.extra, "seq": self.seq, "decision": self.decision}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """A stored record; ValueError when its status is unknown."""
        result = {
            k: v
            for k, v in (data.get("result") or {}).items()
            if v is not None or k not in ("hardware", "curve")
        }  # very old results may hold nulls there
        result["status"] = data.get("status", result.get("status"))
        names = _field_names(cls)
        known = {k: v for k, v in data.items() if k in names and v is not None}
        extra = {k: v for k, v in data.items() if k not in names and k != "status"}
        return cls(
            **{
                "id": "",
                "genome": "",
                **known,
                "result": EvalResult.from_dict(result),
                "extra": extra,
            }
        )
