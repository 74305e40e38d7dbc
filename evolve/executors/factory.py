"""Build the executor a run config asks for: its slots and the per-evaluation settings."""

from __future__ import annotations

from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.executors.base import Executor
from evolve.executors.local import LocalExecutor
from evolve.executors.slots import local_slots
from evolve.harness.data import Dataset
from evolve.runner import RunSettings
from evolve.runner.devices import resolve_device

__all__ = ["build_executor", "local_slots", "run_settings"]

RAY_MISSING = UserError(
    "--executor ray needs Ray, which is not installed",
    "Ray is an optional extra of evolve",
    "install it with pip install 'evolve[ray]' (in a checkout: "
    "pip install -e '.[ray]'), on this machine and on every cluster node",
)


def run_settings(config: RunConfig, device: str) -> RunSettings:
    return RunSettings(
        budget=config.budget,
        grace=config.grace,
        device=device,
        eval_tokens=config.eval_tokens,
        max_log_bytes=config.max_log_bytes,
        max_disk_bytes=config.max_disk_bytes,
        max_files=config.max_files,
        max_source_bytes=config.max_source_bytes,
    )


def build_executor(config: RunConfig, dataset: Dataset) -> tuple[Executor, RunSettings]:
    """The executor and the settings every evaluation starts from (each slot adjusts them)."""
    mixed = config.mixed_hardware
    if config.executor == "ray":
        if config.devices:
            raise UserError(
                f"--devices {config.devices} chooses slots on this machine",
                "with --executor ray the cluster's CPUs and GPUs are the slots",
                "drop --devices; use --threads for the CPU threads of each Ray task",
            )
        try:
            from evolve.executors.ray import RayExecutor  # the optional extra
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "ray":
                raise
            raise RAY_MISSING from None
        executor = RayExecutor(
            dataset,
            run_settings(config, "cpu"),
            config.ray_address,
            data=config.data,
            device=config.device,
            threads=config.threads,
            mixed=mixed,
        )
        return executor, executor.settings
    device = resolve_device(config.device)
    settings = run_settings(config, device)
    slots = local_slots(device, config.devices, config.threads)
    return LocalExecutor(dataset, settings, slots, mixed=mixed), settings
