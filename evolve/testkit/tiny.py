"""The seed genomes made tiny: same code, constants small enough for 2 s CPU budgets.

`tiny_genome` and `ROOT` read `train.py` from a source checkout (the repository root
holds it; an installed wheel does not).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py, genomes/, program.md
TINY = {"SEQ_LEN": 32, "BATCH_SIZE": 8, "N_LAYER": 1, "N_HEAD": 2, "N_EMBD": 32, "LOG_EVERY": 10}
# genomes/gpt_muon.py made as small
MUON_SMALL = {
    "SEQ_LEN": 32,
    "BATCH_SIZE": 8,
    "DEPTH": 1,
    "MODEL_DIM": 64,
    "HEAD_DIM": 32,
    "LOG_EVERY": 10,
}


def set_constants(source: str, **values: object) -> str:
    """Rewrite UPPER_CASE module constants (`NAME = ...` at the start of a line)."""
    for name, value in values.items():
        source, count = re.subn(rf"^{name} = [^#\n]+", f"{name} = {value!r}  ", source, flags=re.M)
        assert count == 1, f"{name} is not a constant of this genome"
    return source


def tiny_genome(**overrides: object) -> str:
    """train.py with the TINY constants (and `overrides`)."""
    return set_constants((ROOT / "train.py").read_text(), **{**TINY, **overrides})
