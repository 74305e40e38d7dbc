"""A small thread pool whose workers are daemons, for proposals.

A proposal can sit in an LLM call for minutes. `concurrent.futures` joins its
workers when the interpreter exits, so Ctrl-C would wait for every call in
flight; these workers are simply dropped at exit. Nothing is lost with them: a
proposal is written to `pending/` only once it is complete (atomically), so
`resume` proposes again whatever was in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class DaemonPool:
    """`submit(fn, *args) -> Future`, run by `workers` daemon threads."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._closed:
            raise RuntimeError("the pool is shut down")
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """Cancel what has not started; workers in the middle of a call are left to the exit."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if self._closed:
                future.cancel()
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: B036 - handed to whoever waits on the future
                    future.set_exception(exc)
