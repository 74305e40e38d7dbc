"""Running the genome's graph on scored batches: bits counted, every batch probed for causality."""

from __future__ import annotations

from typing import Any

import numpy as np

from evolve.harness.vet import Rejected
from evolve.harness.windows import Batch

CAUSAL_TOL = 1e-3  # nats; a causal model changes by exactly 0 on CPU


def _forward(module: Any, x: Any, vocab: int) -> Any:
    logits = module(x)
    if (
        not hasattr(logits, "shape")
        or logits.dim() != 3
        or tuple(logits.shape[:2]) != tuple(x.shape)
        or logits.shape[2] < vocab
    ):
        shape = tuple(getattr(logits, "shape", ()))
        raise Rejected(f"model output has shape {shape}; expected {tuple(x.shape)} + (>= {vocab},)")
    logits = logits[..., :vocab].float()
    if not bool(logits.isfinite().all()):
        raise Rejected("the model's logits are not finite (NaN or inf): training diverged")
    return logits


def _logprobs(module: Any, x: Any, vocab: int) -> Any:
    return _forward(module, x, vocab).log_softmax(-1).clamp(min=-30.0)


def _kept(cuts: Any, length: int) -> Any:
    import torch

    return torch.arange(length, device=cuts.device)[None, :] < cuts[:, None]


def probe_input(x: Any, donor: Any, cuts: Any) -> Any:
    """`x` with each row's tokens from its cut on replaced by the donor's (a cut of 0: all)."""
    import torch

    return torch.where(_kept(cuts, x.shape[1]), x, donor)


def check_causal(
    module: Any,
    x: Any,
    vocab: int,
    rng: np.random.Generator | None = None,
    donor: Any = None,
    cuts: Any = None,
    base: Any = None,
) -> None:
    """Reject models whose predictions at position t depend on tokens after t or on other rows.

    One probe: every row gets its own cut (its tokens from the cut on are replaced)
    and some rows are replaced wholly; every kept prefix must predict exactly as
    before. Compared as log-probabilities (what the loss sees), so inflating
    logits cannot widen the tolerance. The evaluator passes secret cuts and
    natural replacement text for every scored batch; without them, cuts come
    from `rng` and the text from elsewhere in the batch (unit tests).
    """
    import torch

    rows, length = x.shape
    if cuts is None:
        rng = rng or np.random.default_rng()
        drawn = rng.integers(1, max(length, 2), size=rows)
        if rows > 1:
            drawn[rng.choice(rows, size=max(1, rows // 4), replace=False)] = 0
        cuts = torch.from_numpy(drawn).to(x.device)
    if donor is None:
        donor = x.roll(shifts=(1, max(1, length // 3)), dims=(0, 1))
    if base is None:
        base = _logprobs(module, x, vocab)
    changed = (_logprobs(module, probe_input(x, donor, cuts), vocab) - base).abs()
    changed = changed.amax(-1) * _kept(cuts, length)
    diff = float(changed.max())
    if diff <= CAUSAL_TOL:
        return
    row = int(changed.amax(-1).argmax())
    # Which rule broke: change only the other rows and look at this row again.
    others = torch.zeros_like(cuts)
    others[row] = length
    mixed = (
        float(
            (_logprobs(module, probe_input(x, donor, others), vocab)[row] - base[row]).abs().max()
        )
        if rows > 1
        else 0.0
    )
    if mixed > CAUSAL_TOL:
        raise Rejected(
            f"model mixes information across the batch: changing other rows changed "
            f"row {row}'s predictions by {mixed:.3g} nats"
        )
    cut = int(cuts[row])
    raise Rejected(
        f"non-causal model: changing a row's tokens from position {cut} on changed "
        f"the predictions before it by {diff:.3g} nats (tolerance {CAUSAL_TOL:g})"
    )


def score_batches(
    module: Any, batches: list[Batch], vocab: int, token_bytes: Any = None
) -> tuple[float, int]:
    """(nats, bytes) over the batches' masked targets; every batch is probed for causality."""
    import torch

    total_nats, total_bytes = 0.0, 0
    with torch.inference_mode():
        for b in batches:
            logp = _forward(module, b.x, vocab).log_softmax(-1)
            check_causal(module, b.x, vocab, donor=b.donor, cuts=b.cuts, base=logp.clamp(min=-30.0))
            nats = -logp.gather(-1, b.y.unsqueeze(-1)).squeeze(-1)
            total_nats += float((nats * b.mask).sum())
            if token_bytes is None:
                total_bytes += int(b.mask.sum())
            else:
                total_bytes += int((token_bytes[b.y] * b.mask).sum())
    return total_nats, total_bytes
