"""Descriptors pick the cell an evaluation competes in: a genome must not be able to set one.
What the genome reports (steps, tokens, CUDA memory) is kept, labelled, and never binned on
by a new run; archives that binned on it still load."""

from __future__ import annotations

import pytest

from evolve.archive.grid import DESCRIPTORS, REPORTED, Grid
from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.record import EvalResult


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_new_runs_refuse_reported_descriptors(name):
    config = RunConfig(
        descriptors=[
            {"name": "model_size", "low": 4, "high": 9, "bins": 10},
            {"name": name, "low": 1, "high": 9, "bins": 4},
        ]
    )
    with pytest.raises(UserError, match="reported by the genome"):
        config.validate()


def test_trusted_descriptors_are_accepted_and_marked():
    RunConfig(
        descriptors=[
            {"name": "model_size", "low": 4, "high": 9, "bins": 10},
            {"name": "memory", "low": 6, "high": 11, "bins": 5},
            {"name": "code_size", "low": 50, "high": 600, "bins": 10},
        ]
    ).validate()
    for name, (text, _) in DESCRIPTORS.items():
        assert ("REPORTED" in text) == (name in REPORTED)


def test_stored_grids_and_records_from_before_still_load():
    grid = Grid.from_list(
        [
            {"name": "steps", "low": 1, "high": 6, "bins": 5},
            {"name": "tokens", "low": 4, "high": 10, "bins": 6},
        ]
    )
    old = {
        "status": "ok",
        "val_bpb": 2.0,
        "steps": 1000,
        "tokens": 10**7,
        "params": 10**5,
        "peak_memory_bytes": 3 << 20,
        "sandbox": "pgroup,env,landlock-v7,cgroup",
    }
    result = EvalResult.from_dict(old)  # no reported_cuda_peak_bytes field back then
    assert result.reported_cuda_peak_bytes is None
    assert grid.cell_if_known(grid.describe(result, "")) == (2, 3)  # log10 1000 = 3, log10 1e7 = 7


def test_summary_labels_reported_figures():
    text = EvalResult(
        status="ok",
        steps=12,
        tokens=3000,
        peak_memory_bytes=1 << 20,
        reported_cuda_peak_bytes=5 << 20,
    ).summary()
    lines = {line.split(":")[0]: line for line in text.splitlines()[1:]}
    assert "reported by the genome" in lines["num_steps"]
    assert "reported by the genome" in lines["tokens_trained"]
    assert "reported by the genome" in lines["cuda_peak_mb"]
    assert "reported" not in lines["peak_memory_mb"]
