"""What the local and Ray executors share: requests wait for a free slot, results get stamped.

Each request gets a thread that waits for a slot, runs the evaluation there and
resolves the future. Slots may be retired (a dead Ray node) or added (a node
that joined) while the run goes on; the engine reads `slots` before each fill.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from evolve.executors.base import EvalRequest
from evolve.executors.slots import Slot, run_class
from evolve.record import EvalResult


class SlotExecutor:
    """Runs at most one evaluation per slot at a time; subclasses say how (`_evaluate`)."""

    def __init__(self, slots: list[Slot], mixed: bool = False) -> None:
        self.hardware_class = run_class(slots, mixed)  # the class results are compared within
        self.mixed = mixed
        self.notes: list[str] = []  # things the user should know, e.g. nodes left out
        self._slots = list(slots)
        self._free = list(slots)
        self._busy: dict[str, str] = {}
        self._cond = threading.Condition()
        self._requests: set[EvalRequest] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    @property
    def slots(self) -> list[str]:
        with self._cond:
            return [slot.name for slot in self._slots]

    def slot_classes(self) -> dict[str, str]:
        """slot name -> hardware class, for the record of which slot ran what."""
        with self._cond:
            return {slot.name: slot.hardware_class for slot in self._slots}

    def busy(self) -> dict[str, str]:
        with self._cond:
            return dict(self._busy)

    def submit(self, request: EvalRequest) -> Future[EvalResult]:
        future: Future[EvalResult] = Future()
        thread = threading.Thread(
            target=self._serve, args=(request, future), daemon=True, name=f"eval-{request.eval_id}"
        )
        with self._cond:
            self._requests.add(request)
            self._threads.add(thread)
        thread.start()
        return future

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for request in self._requests:
                request.cancel.set()
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        self._close()

    # --- for subclasses ------------------------------------------------------------------

    def _evaluate(self, slot: Slot, request: EvalRequest) -> EvalResult:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what the executor holds, after every request has returned."""

    def _add(self, slots: list[Slot]) -> None:
        with self._cond:
            self._slots += slots
            self._free += slots
            self._cond.notify_all()

    def _retire(self, node: str | None) -> list[Slot]:
        """Stop using every slot on `node`; evaluations running there finish (or fail) as they will."""
        with self._cond:
            gone = [slot for slot in self._slots if slot.node == node]
            self._slots = [slot for slot in self._slots if slot.node != node]
            self._free = [slot for slot in self._free if slot.node != node]
            return gone

    # --- the request thread -----------------------------------------------------------------

    def _serve(self, request: EvalRequest, future: Future[EvalResult]) -> None:
        try:
            slot = self._acquire(request)
            if slot is None:
                result = EvalResult(
                    status="interrupted",
                    reason="cancelled before it started",
                    log_path=str(request.log_path),
                )
            else:
                try:
                    result = self._evaluate(slot, request)
                finally:
                    self._release(slot)
                self._stamp(result, slot)
        except BaseException as exc:  # a bug in the executor: let the engine see it, not hang
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
        finally:
            with self._cond:
                self._requests.discard(request)
                self._threads.discard(threading.current_thread())

    def _acquire(self, request: EvalRequest) -> Slot | None:
        with self._cond:
            while not self._free:
                if request.cancel.is_set() or self._closed:
                    return None
                self._cond.wait(0.5)
            if request.cancel.is_set() or self._closed:
                return None
            slot = self._free.pop(0)
            self._busy[slot.name] = request.eval_id
            return slot

    def _release(self, slot: Slot) -> None:
        with self._cond:
            self._busy.pop(slot.name, None)
            if slot in self._slots:
                self._free.append(slot)
                self._cond.notify()

    def _stamp(self, result: EvalResult, slot: Slot) -> None:
        """Say where the evaluation ran: the slot, its hardware fingerprint and class."""
        result.slot = slot.name
        result.hardware = {
            **slot.facts,
            **result.hardware,
            "class": slot.hardware_class,
            "run_class": self.hardware_class,
        }
        if not result.device or result.device in ("cpu", "cuda"):
            result.device = slot.device_name
        result.torch_version = result.torch_version or slot.facts.get("torch_version", "")
