"""The executor contract: the engine hands over requests and gets result records back."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from evolve.record import EvalResult
from evolve.runner.curve import PrunePlan


@dataclass(eq=False)  # identity semantics: requests live in sets
class EvalRequest:
    """One evaluation: the genome's source and where its log goes. Settings come from the executor."""

    eval_id: str
    source: str
    seed: int
    log_path: Path
    split: str = "val"  # "val" scores for selection; "test" scores the sealed test split once
    prune: PrunePlan | None = None  # children only: the reference curve it may be stopped against
    cancel: threading.Event = field(default_factory=threading.Event)


class Executor(Protocol):
    slots: list[str]  # human names of the evaluation slots, e.g. ["cuda:0", "cuda:1"]; may change
    # The hardware class results are compared within, e.g. "cuda:NVIDIA H100 80GB HBM3" or
    # "cpu:AMD EPYC x2 threads". Every record carries hardware["class"] (its slot's) and
    # hardware["run_class"] (this); EvalResult.comparable says whether they agree.
    hardware_class: str
    notes: list[str]  # things the user should see, e.g. Ray nodes left out and why

    def slot_classes(self) -> dict[str, str]:
        """slot name -> hardware class."""

    def submit(self, request: EvalRequest) -> Future[EvalResult]:
        """Start (or queue) one evaluation; the future resolves to its record, never raises."""

    def busy(self) -> dict[str, str]:
        """slot name -> eval id it is running now."""

    def shutdown(self) -> None:
        """Cancel what is queued, stop what runs, release the slots."""
