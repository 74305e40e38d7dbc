"""Evaluation slots: where one evaluation runs at a time, and what hardware class it has."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evolve.errors import UserError
from evolve.runner.devices import (
    cpu_name,
    cuda_names,
    hardware_class,
    hardware_facts,
    visible_gpu_ids,
)


@dataclass(eq=False)  # identity semantics: a slot is one place, even if two look alike
class Slot:
    """One place an evaluation can run: a GPU (cuda_visible='3') or a share of CPU threads."""

    name: str
    device: str = "cpu"
    cuda_visible: str | None = None
    threads: int = 1
    device_name: str = ""  # "NVIDIA H100 80GB HBM3", "AMD EPYC 7B13"; filled in when empty
    facts: dict[str, Any] = field(default_factory=dict)  # the hardware fingerprint of the slot
    node: str | None = None  # Ray node id; None on this machine
    mem_limit_bytes: int | None = None  # None: the run settings' limit

    def __post_init__(self) -> None:
        if not self.device_name:
            self.device_name = cpu_name() if self.device == "cpu" else "unknown GPU"
        if not self.facts:
            self.facts = hardware_facts(self.device, self.device_name, self.threads)

    @property
    def hardware_class(self) -> str:
        return hardware_class(self.device, self.device_name, self.threads)


def local_slots(device: str, devices: str | None, threads: int | None) -> list[Slot]:
    """One slot per GPU (never two evaluations on one GPU), or CPU slots sharing the cores.

    devices: None (every visible GPU, or one CPU slot with every core), "0,2" (those GPUs;
    a GPU listed twice runs two evaluations), "cpu:N" (N CPU slots, cores split between
    them) or "cpu:NxT" (N CPU slots of T threads each).
    """
    cores = os.cpu_count() or 1
    if devices and devices.startswith("cpu"):
        count, per = _cpu_spec(devices)
        per = per or threads or max(1, cores // count)
        return [Slot(f"cpu{i}", "cpu", None, per) for i in range(count)]
    if device == "cuda":
        ids = [d.strip() for d in devices.split(",") if d.strip()] if devices else visible_gpu_ids()
        return gpu_slots(ids, threads or max(1, cores // max(1, len(ids))))
    if devices:
        raise UserError(
            f"--devices {devices} names GPUs, but the run uses the CPU",
            "GPU slots need --device cuda (or auto on a machine with GPUs)",
            "use --devices cpu:N for N CPU slots",
        )
    return [Slot("cpu0", "cpu", None, threads or cores)]


def gpu_slots(ids: list[str], threads: int) -> list[Slot]:
    """A slot per listed GPU id, pinned through CUDA_VISIBLE_DEVICES, named after its GPU."""
    if not ids:
        raise UserError(
            "no GPU to run on",
            "no GPU id was given and none is visible",
            "pass --devices 0,1 or use --device cpu",
        )
    names = cuda_names(",".join(dict.fromkeys(ids)))
    if len(names) < len(dict.fromkeys(ids)):
        raise UserError(
            f"GPU ids {','.join(ids)} were asked for, but only {len(names)} of them are visible",
            "an id does not exist on this machine",
            "list the GPUs with nvidia-smi and pass existing ids to --devices",
        )
    model = dict(zip(dict.fromkeys(ids), names, strict=False))
    seen: Counter[str] = Counter()
    slots = []
    for gpu in ids:
        seen[gpu] += 1
        suffix = f"#{seen[gpu]}" if seen[gpu] > 1 else ""
        slots.append(Slot(f"cuda:{gpu}{suffix}", "cuda", gpu, threads, device_name=model[gpu]))
    return slots


def _cpu_spec(text: str) -> tuple[int, int | None]:
    """'cpu' -> (1, None), 'cpu:4' -> (4, None), 'cpu:2x8' -> (2, 8)."""
    if text == "cpu":
        return 1, None
    count, _, per = text.removeprefix("cpu:").partition("x")
    try:
        values = (int(count), int(per) if per else None)
    except ValueError:
        values = (0, None)
    if not text.startswith("cpu:") or values[0] < 1 or (values[1] is not None and values[1] < 1):
        raise UserError(
            f"bad --devices value {text!r}",
            "expected cpu, cpu:N or cpu:NxT with N, T >= 1",
            "for example --devices cpu:2 or --devices cpu:2x1",
        )
    return values


def run_class(slots: list[Slot], mixed: bool = False) -> str:
    """The hardware class a run's results are compared within; refuse to mix classes silently."""
    if not slots:
        raise UserError(
            "no evaluation slot",
            "the executor found nowhere to run evaluations",
            "check --devices, or that the Ray cluster has free CPUs or GPUs",
        )
    counts = Counter(slot.hardware_class for slot in slots)
    if len(counts) > 1 and not mixed:
        listing = "; ".join(
            f"{cls}: {', '.join(s.name for s in slots if s.hardware_class == cls)}"
            for cls in counts
        )
        raise UserError(
            "the evaluation slots are of different hardware classes",
            f"scores after a fixed time budget differ between them ({listing})",
            "choose slots of one kind with --devices (or --threads), or pass "
            "--mixed-hardware to run anyway; results off the main class are then "
            "flagged and kept out of comparisons",
        )
    return counts.most_common(1)[0][0]
