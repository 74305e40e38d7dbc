"""Build the executor a run config asks for: its slots and the per-evaluation settings."""

from __future__ import annotations

import os

from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.executors.base import Executor
from evolve.executors.local import LocalExecutor, Slot
from evolve.harness.data import Dataset
from evolve.runner import RunSettings
from evolve.runner.devices import cuda_count, resolve_device


def run_settings(config: RunConfig, device: str) -> RunSettings:
    return RunSettings(budget=config.budget, grace=config.grace, device=device,
                       eval_tokens=config.eval_tokens)


def local_slots(device: str, devices: str | None, threads: int | None) -> list[Slot]:
    """One slot per GPU (never two evaluations on one GPU), or CPU slots sharing the cores.

    devices: None (all GPUs, or one CPU slot with every core), "0,2" (those GPUs),
    "cpu:N" (N CPU slots, cores split between them).
    """
    cores = os.cpu_count() or 1
    if devices and devices.startswith("cpu"):
        count = _int_after(devices, "cpu:", 1)
        per = threads or max(1, cores // count)
        return [Slot(f"cpu{i}", "cpu", None, per) for i in range(count)]
    if device == "cuda":
        ids = [d.strip() for d in devices.split(",")] if devices else [str(i) for i in range(cuda_count())]
        return [Slot(f"cuda:{gpu}", "cuda", gpu, threads or max(1, cores // len(ids))) for gpu in ids]
    if devices:
        raise UserError(f"--devices {devices} names GPUs, but the run uses the CPU",
                        "GPU slots need --device cuda (or auto on a machine with GPUs)",
                        "use --devices cpu:N for N CPU slots")
    return [Slot("cpu0", "cpu", None, threads or cores)]


def _int_after(text: str, prefix: str, default: int) -> int:
    if text == prefix.rstrip(":"):
        return default
    try:
        value = int(text[len(prefix):])
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"bad --devices value {text!r}", "expected cpu or cpu:N with N >= 1",
                        "for example --devices cpu:2")
    return value


def build_executor(config: RunConfig, dataset: Dataset) -> tuple[Executor, RunSettings]:
    device = resolve_device(config.device)
    settings = run_settings(config, device)
    if config.executor == "ray":
        from evolve.executors.ray import RayExecutor  # optional extra

        return RayExecutor(dataset, settings, config.ray_address), settings
    return LocalExecutor(dataset, settings, local_slots(device, config.devices, config.threads)), settings
