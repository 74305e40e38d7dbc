"""The seed genomes in genomes/ train and are scored under the real harness."""

from __future__ import annotations

import pytest
import torch

from evolve.testkit.tiny import MUON_SMALL, set_constants
from tests.conftest import ROOT


def test_gpu_scale_genome_learns_on_cpu_when_shrunk(evaluate) -> None:
    source = set_constants((ROOT / "genomes" / "gpt_muon.py").read_text(), **MUON_SMALL)
    run = evaluate(source, budget=4.0)
    assert run.result.status == "ok", run.log[-2000:]
    assert run.result.steps and run.result.steps > 5
    assert run.result.val_bpb < 7.0  # uniform guessing over bytes is 8.0
    assert "Traceback" not in run.log


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_scale_genome_on_cuda(evaluate) -> None:
    run = evaluate(
        (ROOT / "genomes" / "gpt_muon.py").read_text(),
        budget=60.0,
        device="cuda",
        threads=4,
        mem_limit_bytes=None,
        eval_tokens=65536,
        grace=60.0,
    )
    assert run.result.status == "ok", run.log[-2000:]
    assert run.result.val_bpb < 3.0
