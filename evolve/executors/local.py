"""Evaluations on this machine: one thread per slot, each running the sandboxed runner."""

from __future__ import annotations

import dataclasses
import queue
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from evolve.executors.base import EvalRequest
from evolve.harness.data import Dataset
from evolve.record import EvalResult
from evolve.runner import RunSettings, run_genome


@dataclasses.dataclass
class Slot:
    """One place an evaluation can run: a GPU (cuda_visible='3') or a share of CPU threads."""

    name: str
    device: str = "cpu"
    cuda_visible: str | None = None
    threads: int = 1


class LocalExecutor:
    """Runs at most one evaluation per slot at a time; slots never share a GPU."""

    def __init__(self, dataset: Dataset, settings: RunSettings, slots: list[Slot],
                 scratch: Path | None = None) -> None:
        self.dataset, self.settings = dataset, settings
        self.slots = [slot.name for slot in slots]
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)
        self._busy: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot")
        self._scratch = Path(scratch or tempfile.mkdtemp(prefix="evolve-work-"))
        self._requests: set[EvalRequest] = set()

    def submit(self, request: EvalRequest) -> Future[EvalResult]:
        with self._lock:
            self._requests.add(request)
        return self._pool.submit(self._run, request)

    def busy(self) -> dict[str, str]:
        with self._lock:
            return dict(self._busy)

    def _run(self, request: EvalRequest) -> EvalResult:
        slot = self._free.get()
        workdir = self._scratch / request.eval_id
        try:
            with self._lock:
                self._busy[slot.name] = request.eval_id
            settings = dataclasses.replace(self.settings, seed=request.seed, slot=slot.name,
                                           device=slot.device, cuda_visible=slot.cuda_visible,
                                           threads=slot.threads)
            if request.cancel.is_set():
                return EvalResult(status="interrupted", reason="cancelled before it started",
                                  slot=slot.name, log_path=str(request.log_path))
            return run_genome(request.source, self.dataset, settings, workdir, request.log_path,
                              cancel=request.cancel)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            with self._lock:
                self._busy.pop(slot.name, None)
                self._requests.discard(request)
            self._free.put(slot)

    def shutdown(self) -> None:
        with self._lock:
            for request in self._requests:
                request.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._scratch, ignore_errors=True)
