"""A tiny variant of the seed genome: same code, constants small enough for 2 s CPU budgets."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = {"N_LAYER": 1, "N_HEAD": 2, "N_EMBD": 32, "BATCH_SIZE": 4, "SEQ_LEN": 32, "LOG_EVERY": 5}


def with_constants(source: str, values: dict[str, object]) -> str:
    """Rewrite top-level UPPER_CASE assignments, keeping the rest of the file as it is."""
    for name, value in values.items():
        source, count = re.subn(rf"^{name} = [^#\n]+", f"{name} = {value!r} ", source, flags=re.M)
        assert count == 1, f"{name} not found"
    return source


def tiny_genome(**overrides: object) -> str:
    return with_constants((ROOT / "train.py").read_text(), {**TINY, **overrides})
