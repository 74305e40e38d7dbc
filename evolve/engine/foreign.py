"""Training scripts brought from elsewhere: say exactly what to change to run under the harness.

An autoresearch train.py imports its data loader, clock and scorer from
prepare.py. Under evolve the harness owns all three (a genome never sees the
validation data), so those four names have direct replacements.
"""

from __future__ import annotations

import re

from evolve.errors import UserError

PREPARE_IMPORT = re.compile(r"^\s*(from\s+prepare\s+import\b|import\s+prepare\b)", re.M)
REPLACEMENTS = (
    ("from prepare import ...", "from evolve.harness import session; run = session()"),
    ("make_dataloader(...) / the dataloader", "for x, y in run.batches(B, T): ..."),
    ("TIME_BUDGET and the time checks", "train while run.time_left() > 0"),
    ("evaluate_bpb(...) and the final prints", "run.submit(model, seq_len=T) at the end"),
    ("device = 'cuda', Tokenizer vocab size", "run.device, run.vocab_size"),
)


def check_harness(path: str, source: str) -> None:
    """UserError unless `source` talks to the evolve harness; specific advice for autoresearch."""
    if "session(" in source:
        return
    if PREPARE_IMPORT.search(source):
        steps = "; ".join(f"{old} -> {new}" for old, new in REPLACEMENTS)
        raise UserError(
            f"seed genome {path} is an autoresearch-style train.py and cannot run under the harness",
            "it imports its data loader, time budget and evaluate_bpb from prepare.py; under evolve "
            "the harness serves the batches, keeps the clock and scores the model itself",
            f"edit it: {steps}. train.py in the evolve repository is a complete example",
        )
    raise UserError(
        f"seed genome {path} does not use the evolve harness",
        "a genome gets its data and hands in its model through evolve.harness.session()",
        "start from train.py: `run = session()`, train on `run.batches(B, T)` while "
        "`run.time_left() > 0`, end with `run.submit(model, seq_len=T)`",
    )
