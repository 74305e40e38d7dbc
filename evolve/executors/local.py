"""Evaluations on this machine: one at a time per slot, each in the sandboxed runner."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from evolve.executors.base import EvalRequest
from evolve.executors.pool import SlotExecutor
from evolve.executors.slots import Slot
from evolve.harness.data import Dataset
from evolve.record import EvalResult
from evolve.runner import RunSettings, run_genome

__all__ = ["LocalExecutor", "Slot"]


class LocalExecutor(SlotExecutor):
    """Slots never share a GPU; CPU slots split the cores and the memory limit between them."""

    def __init__(
        self,
        dataset: Dataset,
        settings: RunSettings,
        slots: list[Slot],
        scratch: Path | None = None,
        mixed: bool = False,
    ) -> None:
        super().__init__(slots, mixed)
        self.dataset, self.settings = dataset, settings
        self._scratch = Path(scratch or tempfile.mkdtemp(prefix="evolve-work-"))
        self._mem_limit = settings.mem_limit_bytes and settings.mem_limit_bytes // len(slots)

    def _evaluate(self, slot: Slot, request: EvalRequest) -> EvalResult:
        workdir = self._scratch / request.eval_id
        settings = dataclasses.replace(
            self.settings,
            seed=request.seed,
            slot=slot.name,
            device=slot.device,
            cuda_visible=slot.cuda_visible,
            threads=slot.threads,
            mem_limit_bytes=slot.mem_limit_bytes or self._mem_limit,
            split=request.split,
            prune=request.prune,
        )
        if request.cancel.is_set():
            return EvalResult(
                status="interrupted",
                reason="cancelled before it started",
                log_path=str(request.log_path),
            )
        try:
            return run_genome(
                request.source,
                self.dataset,
                settings,
                workdir,
                request.log_path,
                cancel=request.cancel,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
