"""The numbers a researcher reasons from: the device, the budget, the parent's measurements, noise.

"The model is undertrained in 5 minutes: make it smaller" needs to know how many
steps and tokens the last run got, how much of the device's memory it used and
how big a difference the run can tell from noise. These come from the parent's
val-split records. Parameters, wall time, training time and peak host memory
are measured by trusted code; steps, tokens and a GPU's peak memory are counted
inside the genome's own process, so the prompt marks them as reported by the
program.

The smallest difference that counts is the engine's own replacement margin
(`EliteRule.margin`) for a child evaluated once against this parent: one
definition, shared with the archive.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evolve.archive.elites import EliteRule
from evolve.record import Evaluation
from evolve.textsafe import printable

REPORTED = "(reported by the program)"


@dataclass(frozen=True)
class Facts:
    """What the prompt's facts table shows for one parent (None: not measured)."""

    runs: int  # ok val-split evaluations the numbers average over
    device: str = ""
    device_memory: int | None = None  # bytes the device has (GPU memory, or the host's RAM)
    budget: float | None = None  # training seconds per evaluation
    params: int | None = None
    peak_memory: int | None = None  # host memory, measured by the runner
    gpu_peak: int | None = None  # reported: torch.cuda.max_memory_allocated() in the genome
    steps: float | None = None
    tokens: float | None = None
    training_seconds: float | None = None
    wall_seconds: float | None = None
    noise_std: float | None = None
    smallest_difference: float | None = None  # margin a once-evaluated child must beat

    @property
    def tokens_per_second(self) -> float | None:
        if not self.tokens or not self.training_seconds or self.training_seconds <= 0:
            return None
        return self.tokens / self.training_seconds


def parent_facts(records: Iterable[Evaluation], rule: EliteRule, n: int) -> Facts:
    """Facts from a parent's evaluations (test-split and other-hardware ones are left out)."""
    results = [r.result for r in records if r.ok and not r.sealed and r.comparable]
    margin = rule.margin(1, max(1, n or len(results) or 1))
    if not results:
        return Facts(0, noise_std=rule.noise_std, smallest_difference=margin)
    last = results[-1]
    hardware = last.hardware or {}
    kind = hardware.get("kind") or ("cuda" if hardware.get("cuda_version") else "cpu")
    return Facts(
        runs=len(results),
        device=_device(last.device, hardware, kind),
        device_memory=_device_memory(hardware, kind),
        budget=_number(last.budget),
        params=_int(_mean(r.params for r in results)),
        peak_memory=_int(_max(r.peak_memory_bytes for r in results)),
        gpu_peak=_int(_max(r.reported_cuda_peak_bytes for r in results))
        if kind == "cuda"
        else None,
        steps=_mean(r.steps for r in results),
        tokens=_mean(r.tokens for r in results),
        training_seconds=_mean(r.training_seconds for r in results),
        wall_seconds=_mean(r.wall_seconds for r in results),
        noise_std=rule.noise_std,
        smallest_difference=margin,
    )


def table(facts: Facts) -> str:
    """The facts as a small markdown table; rows without a measurement are left out."""
    if not facts.runs:
        return ""  # nothing measured yet (a seed before its first score): no numbers to show
    rows: list[tuple[str, str]] = []
    if facts.device:
        memory = f", {_bytes(facts.device_memory)} memory" if facts.device_memory else ""
        rows.append(("device", f"{facts.device}{memory}"))
    if facts.budget:
        rows.append(
            (
                "training budget",
                f"{facts.budget:g} s of training per evaluation "
                "(fixed; start-up and scoring not counted)",
            )
        )
    if facts.params is not None:
        rows.append(("parameters", f"{facts.params:,} ({_short(facts.params)})"))
    gpu = facts.device.endswith("(GPU)")
    if facts.gpu_peak is not None:
        rows.append(("peak GPU memory", _of(facts.gpu_peak, facts.device_memory) + f" {REPORTED}"))
    if facts.peak_memory is not None:  # on a CPU the device's memory is the host's
        rows.append(
            (
                "peak host memory" if gpu else "peak memory",
                _of(facts.peak_memory, None if gpu else facts.device_memory),
            )
        )
    if facts.steps is not None:
        rows.append(("steps trained", f"{facts.steps:,.0f} {REPORTED}"))
    if facts.tokens is not None:
        rows.append(("tokens trained", f"{facts.tokens:,.0f} ({_short(facts.tokens)}) {REPORTED}"))
    if facts.tokens_per_second is not None:
        rows.append(
            (
                "tokens per second",
                f"{_short(facts.tokens_per_second)} (reported tokens / "
                f"{facts.training_seconds:.1f} s of training)",
            )
        )
    if facts.wall_seconds:
        rows.append(("wall time", f"{facts.wall_seconds:.1f} s per evaluation, start to score"))
    if facts.smallest_difference is not None:
        rows.append(
            (
                "smallest difference that counts",
                f"{facts.smallest_difference:.4f} val_bpb: a child evaluated once must score "
                f"at least this much lower to count as better (the run's noise std "
                f"{facts.noise_std or 0:.4f})",
            )
        )
    over = f", mean of {facts.runs} evaluations" if facts.runs > 1 else ""
    lines = [f"Facts (measured by the harness{over}):", "| fact | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _of(used: int, total: int | None) -> str:
    if not total:
        return _bytes(used)
    return f"{_bytes(used)} of {_bytes(total)} ({used / total:.1%})"


def _device(device: str, hardware: Mapping[str, Any], kind: str) -> str:
    name = str(hardware.get("device_name") or device or kind)
    name = " ".join(printable(name).replace("|", "/").split())  # one table cell, no controls
    if kind == "cuda":
        return f"{name} (GPU)"
    threads = hardware.get("threads")
    if not threads:
        return f"{name} (CPU)"
    return f"{name} (CPU, {threads} thread{'s' if threads != 1 else ''})"


def _device_memory(hardware: Mapping[str, Any], kind: str) -> int | None:
    """As the evaluator reported it; for older CPU records of this host, the host's RAM."""
    reported = _number(hardware.get("memory_bytes"))
    if reported and reported > 0:
        return int(reported)
    if kind == "cpu" and hardware.get("host") == platform.node():
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None  # a GPU's memory is never probed here: that would create a CUDA context


def _numbers(values: Iterable[Any]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def _mean(values: Iterable[Any]) -> float | None:
    found = _numbers(values)
    return statistics.fmean(found) if found else None


def _max(values: Iterable[Any]) -> float | None:
    return max(_numbers(values), default=None)


def _int(value: Any) -> int | None:
    return None if value is None else int(round(value))


def _number(value: Any) -> float | None:
    found = _numbers([value])
    return found[0] if found else None


def _short(value: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "?"
    for size, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value:.0f} B"
