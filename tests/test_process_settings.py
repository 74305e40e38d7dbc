"""The typed settings the runner hands to the genome process and the evaluator."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evolve.harness.settings import EvaluatorSettings, GenomeSettings, SettingsError

COMMON = {
    "device": "cpu",
    "threads": 2,
    "vocab_size": 256,
    "export_batch": 8,
    "mem_limit": None,
    "max_file_bytes": 1 << 30,
    "sealed": ("/data/val.npy",),
}
GENOME = GenomeSettings(
    **COMMON,
    budget=300.0,
    seed=7,
    control_fd=3,
    train_path="/d/train.npy",
    max_procs=256,
    cgroups=("/sys/fs/cgroup/x",),
)
EVALUATOR = EvaluatorSettings(
    **COMMON,
    heldout_path="/d/val.npy",
    split="val",
    eval_tokens=2048,
    token_bytes_path=None,
    verdict_fd=3,
)


@pytest.mark.parametrize("settings", [GENOME, EVALUATOR], ids=["genome", "evaluator"])
def test_settings_round_trip_through_the_environment(settings, monkeypatch) -> None:
    ((name, text),) = settings.to_env().items()
    monkeypatch.setenv(name, text)
    assert type(settings).from_env() == settings
    started = dataclasses.replace(GENOME, clock_start=12.5)
    assert GenomeSettings.from_json(started.to_json()).clock_start == 12.5


def test_json_numbers_and_lists_come_back_as_the_declared_types() -> None:
    data = json.loads(GENOME.to_json()) | {"budget": 3, "sealed": ["/a", "/b"]}
    parsed = GenomeSettings.from_json(json.dumps(data))
    assert parsed.budget == 3.0 and isinstance(parsed.budget, float)
    assert parsed.sealed == ("/a", "/b")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("budget"), "missing ['budget']"),
        (lambda d: d.update(heldout_path="/d/val.npy"), "unknown ['heldout_path']"),
        (lambda d: d.update(seed="7"), "seed is '7', not int"),
        (lambda d: d.update(threads=True), "threads is True, not int"),
        (lambda d: d.update(mem_limit=1.5), "mem_limit is 1.5, not int | None"),
        (
            lambda d: d.update(cgroups="/sys/fs/cgroup/x"),
            "cgroups is '/sys/fs/cgroup/x', not tuple",
        ),
        (lambda d: d.update(sealed=["/a", 3]), "sealed is ['/a', 3]"),
    ],
)
def test_a_malformed_payload_is_refused_with_what_is_wrong(change, message) -> None:
    data = json.loads(GENOME.to_json())
    change(data)
    with pytest.raises(SettingsError, match="EVOLVE_SESSION") as caught:
        GenomeSettings.from_json(json.dumps(data))
    assert message in str(caught.value)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null"])
def test_text_that_is_no_json_object_is_refused(text) -> None:
    with pytest.raises(SettingsError, match="EVOLVE_EVAL"):
        EvaluatorSettings.from_json(text)


def test_a_missing_environment_entry_says_who_sets_it(monkeypatch) -> None:
    monkeypatch.delenv("EVOLVE_EVAL", raising=False)
    with pytest.raises(SettingsError, match="started by the runner"):
        EvaluatorSettings.from_env()


def test_the_genome_is_not_told_where_the_held_out_split_is_or_how_it_is_scored() -> None:
    genome = {f.name for f in dataclasses.fields(GenomeSettings)}
    evaluator_only = {f.name for f in dataclasses.fields(EvaluatorSettings)} - genome
    assert evaluator_only == {
        "heldout_path",
        "split",
        "eval_tokens",
        "token_bytes_path",
        "verdict_fd",
    }
