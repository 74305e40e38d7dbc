"""What is scored: windows of the held-out pool at secret stratified offsets, with their probes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.harness.vet import Rejected


@dataclass
class Batch:
    """One scored batch and its probe, all on the device before the sandbox closes."""

    x: Any  # (B, T) int64 inputs
    y: Any  # (B, T) targets
    mask: Any  # (B, T) bool: which targets count (padding rows and the last window's tail do not)
    donor: Any  # (B, T) natural held-out text that replaces the probed tails
    cuts: Any  # (B,) int64: the probe keeps positions < cut of each row; 0 = row wholly replaced


def stratified_starts(span: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` window starts in [0, span): one uniform draw in each of `count` equal strata.

    Stratifying keeps the sampling noise of a random subset low: every part of
    the pool is scored in every evaluation, at positions no genome can predict.
    """
    edges = np.linspace(0.0, float(span), count + 1)
    starts = np.floor(edges[:-1] + rng.random(count) * np.diff(edges)).astype(np.int64)
    return np.clip(starts, 0, span - 1)


def plan(
    pool: np.ndarray,
    n_targets: int,
    seq_len: int,
    batch: int,
    rng: np.random.Generator,
    device: str = "cpu",
) -> list[Batch]:
    """The batches that score `n_targets` targets of `pool`, with their probes.

    Windows of seq_len + 1 tokens start at secret stratified offsets (they may
    overlap when the pool is small) and are shuffled across batches. Each probe
    gives every row its own secret cut and replaces a random quarter of the rows
    wholly, with text from other secret places of the pool.
    """
    import torch

    length = len(pool)
    if length < seq_len + 1:
        raise Rejected(f"seq_len {seq_len} is longer than the held-out split ({length} tokens)")
    count = math.ceil(n_targets / seq_len)
    starts = stratified_starts(length - seq_len, count, rng)
    rng.shuffle(starts)
    n_batches = math.ceil(count / batch)
    starts = np.concatenate([starts, np.repeat(starts[:1], n_batches * batch - count)])
    windows = np.asarray(pool[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    mask = np.zeros(n_batches * batch * seq_len, dtype=bool)
    mask[:n_targets] = True
    donor_starts = rng.integers(0, length - seq_len + 1, size=n_batches * batch)
    donors = np.asarray(pool[donor_starts[:, None] + np.arange(seq_len)], dtype=np.int64)
    cuts = rng.integers(1, max(seq_len, 2), size=(n_batches, batch))
    if batch > 1:
        for row_cuts in cuts:
            row_cuts[rng.choice(batch, size=max(1, batch // 4), replace=False)] = 0

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    x = tensor(windows[:, :-1]).view(n_batches, batch, seq_len)
    y = tensor(windows[:, 1:]).view(n_batches, batch, seq_len)
    masks = tensor(mask).view(n_batches, batch, seq_len)
    donors_t = tensor(donors).view(n_batches, batch, seq_len)
    cuts_t = tensor(cuts)
    return [Batch(x[i], y[i], masks[i], donors_t[i], cuts_t[i]) for i in range(n_batches)]
