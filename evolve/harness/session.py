"""The genome's side of the harness: data in, model out, nothing else.

A genome sees the training split, the budget clock and a way to hand in its
model. It never sees validation data and never scores itself: `submit()`
exports the model and ends the process; a separate evaluator does the rest.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from evolve.harness.settings import GenomeSettings, SettingsError

CURVE_POINTS = 512  # curve points sent per budget at most (the runner refuses floods)
MAX_LOSS = 1e6  # the runner's bound on a reported loss (evolve.runner.channel.MAX_LOSS)
MODEL_FILE = "model.pt2"


class Session:
    """Settings and services for one evaluation; made by `session()`."""

    def __init__(self, settings: GenomeSettings) -> None:
        if settings.clock_start is None:
            raise SettingsError(
                "the budget clock was not started: run the genome with "
                "`evolve eval FILE`, whose sandbox prologue starts it"
            )
        self._settings = settings
        self.budget: float = settings.budget
        self.device: str = settings.device
        self.seed: int = settings.seed
        self.vocab_size: int = settings.vocab_size
        self._start: float = settings.clock_start
        self._fd: int = settings.control_fd
        self._train = np.load(settings.train_path, mmap_mode="r")
        self._rng = np.random.default_rng(self.seed)
        self.tokens_served = 0
        self._next_point = 0.0  # elapsed() at which the next curve point may be sent

    def elapsed(self) -> float:
        """Seconds since the runner started this process (imports included)."""
        return time.monotonic() - self._start

    def time_left(self) -> float:
        """Seconds of training budget left; stop training when this reaches 0."""
        return self.budget - self.elapsed()

    def batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[Any, Any]]:
        """Endless (inputs, targets) batches of random windows of the training split."""
        import torch

        limit = len(self._train) - seq_len - 1
        if limit <= 0:
            raise ValueError(f"seq_len {seq_len} is longer than the training split")
        window = np.arange(seq_len + 1)
        pin = self.device.startswith("cuda")
        while True:
            starts = self._rng.integers(0, limit, size=batch_size)
            chunk = torch.from_numpy(self._train[starts[:, None] + window].astype(np.int64))
            if pin:
                chunk = chunk.pin_memory()
            chunk = chunk.to(self.device, non_blocking=True)
            self.tokens_served += batch_size * seq_len
            yield chunk[:, :-1], chunk[:, 1:]

    def log(self, **values: Any) -> None:
        """One human-readable progress line in the log, never parsed for the score.

        With `step=` and `loss=` it also sends a point of the training curve (at most
        CURVE_POINTS per budget, while the budget lasts): the runner may stop a run whose
        loss is clearly behind its parent's at the same training time (`--prune`)."""
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()]
        parts.append(f"time_left {self.time_left():.1f}s")
        print(" | ".join(parts), flush=True)
        self._curve_point(values.get("step"), values.get("loss"))

    def _curve_point(self, step: Any, loss: Any) -> None:
        try:
            step, loss = int(step), float(loss)
        except (TypeError, ValueError, OverflowError):
            return
        elapsed = self.elapsed()
        if elapsed < self._next_point or elapsed > self.budget or not 0 <= step <= 10**18:
            return
        if not loss >= 0:  # a negative loss says nothing comparable; NaN is diverged
            loss = MAX_LOSS if math.isnan(loss) else None
        if loss is None:
            return
        loss = min(loss, MAX_LOSS)  # diverged (inf, huge) is sent as the largest loss allowed
        self._next_point = elapsed + self.budget / CURVE_POINTS
        self._send(event="curve", step=step, loss=loss)

    def submit(self, model: Any, seq_len: int, steps: int | None = None) -> NoReturn:
        """Hand the trained model in for evaluation and end this process."""
        import torch

        # Reported figures: this code runs in the genome's process, which can change any
        # of them. The runner keeps them as reported and never bins the map on them.
        self._send(
            event="training_done",
            steps=None if steps is None else int(steps),
            tokens=int(self.tokens_served),
            cuda_peak_bytes=_cuda_peak(torch),
        )
        model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
        model.eval()
        batch = self._settings.export_batch
        example = torch.zeros((batch, int(seq_len)), dtype=torch.long, device=self.device)
        try:
            with torch.no_grad():
                program = torch.export.export(model, (example,))
            torch.export.save(program, "partial." + MODEL_FILE)
            os.replace("partial." + MODEL_FILE, MODEL_FILE)
        except Exception as exc:  # the reason goes to the log and the record
            print(
                f"evolve: the model could not be exported with torch.export: {exc}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(4)
        self._send(event="submitted", path=MODEL_FILE, seq_len=int(seq_len))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def _send(self, **message: Any) -> None:
        os.write(self._fd, (json.dumps(message) + "\n").encode())


def _cuda_peak(torch: Any) -> int | None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return None


_SESSION: Session | None = None


def session() -> Session:
    """The current evaluation's session. Genomes run only under `evolve eval`."""
    global _SESSION
    if _SESSION is None:
        if not os.environ.get(GenomeSettings.ENV_VAR):
            raise SystemExit(
                "this is an evolve genome: run it with `evolve eval FILE` so the harness "
                "can give it data and score it"
            )
        _SESSION = Session(GenomeSettings.from_env())
    return _SESSION
