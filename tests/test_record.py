"""The typed records: Status, EvalResult and the stored Evaluation, against real archive files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.operators.llm.context import origin, score
from evolve.record import REPEAT_OPERATORS, EvalResult, Evaluation, Status
from evolve.testkit.grids import small_grid

SOURCE = "import torch\n" + "x = 1\n" * 80


def test_a_status_is_its_string_on_disk_and_in_comparisons() -> None:
    result = EvalResult("ok", val_bpb=1.5)
    assert result.status is Status.OK and result.status == "ok" and result.ok
    assert type(result.to_dict()["status"]) is str  # a plain str, not the enum
    assert json.loads(result.to_json())["status"] == "ok"
    result.status = "lost"  # the runner downgrades a built result: still a Status
    assert result.status is Status.LOST and result.status.infrastructure
    assert not Status.PRUNED.infrastructure and not Status.CRASHED.infrastructure


def test_an_unknown_status_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown status 'exploded'; expected one of ok, "):
        EvalResult("exploded")
    with pytest.raises(ValueError, match="unknown status 'bogus'"):
        EvalResult("ok").status = "bogus"
    with pytest.raises(ValueError, match="unknown status 'weird'"):
        Evaluation.from_dict({"id": "e000001", "genome": "a" * 64, "status": "weird"})


def test_what_add_evaluation_stores_is_to_dict_and_reads_back_the_same(tmp_path: Path) -> None:
    with RunArchive.create(tmp_path / "r", {}, grid=small_grid()) as archive:
        seed = archive.add_evaluation(
            EvalResult("ok", val_bpb=2.0, params=10**6), SOURCE, generation=0, operator="seed"
        )
        child = archive.add_evaluation(
            EvalResult(
                "ok", val_bpb=1.9, params=10**6, curve=[[1.0, 10, 3.5]], hardware={"kind": "cpu"}
            ),
            SOURCE + "y = 2\n",
            generation=1,
            parents=[seed.genome],
            operator="llm_mutate",
            idea="a\n  wider   MLP",
            prompt="P",
            response="R",
            origin={"run": "old", "id": "e000009"},
            target={"cell": [4, 0], "held_by": None},
        )
    stored = json.loads((tmp_path / "r" / "evals" / "shard-000000.json").read_text())
    raw = stored["evaluations"]["2"]
    assert raw == child.to_dict() and list(raw) == list(child.to_dict())  # same keys, same order
    assert list(raw) == [
        "id",
        "generation",
        "genome",
        "parents",
        "operator",
        "idea",
        "status",
        "result",
        "descriptors",
        "cell",
        "created",
        "prompt_sha256",
        "response_sha256",
        "origin",
        "target",
        "seq",
        "decision",
    ]
    assert Evaluation.from_dict(raw).to_dict() == raw
    assert "prompt_sha256" not in stored["evaluations"]["1"]  # optional keys: only when set
    with RunArchive.open(tmp_path / "r") as reader:
        again = reader.get("e000002")
    assert again == child and again.idea == "a wider MLP" and again.target["landed"] is True
    assert again.val_bpb == 1.9 and not again.sealed and again.comparable and not again.is_repeat


def test_an_older_record_with_missing_and_unknown_keys_loads(tmp_path: Path) -> None:
    """What an earlier version wrote: no seq, decision, descriptors, split or curve, a null
    hardware, and a key this version does not know (kept, and written back unchanged)."""
    old = {
        "id": "e000001",
        "generation": 0,
        "genome": "a" * 64,
        "parents": [],
        "operator": "seed",
        "idea": "",
        "status": "ok",
        "cell": [1, 0],
        "created": 1.0,
        "note": "from 2025",
        "result": {"status": "ok", "val_bpb": 1.25, "hardware": None, "retired_field": 3},
    }
    record = Evaluation.from_dict(old)
    assert (record.seq, record.decision, record.descriptors, record.prompt_sha256) == (
        0,
        None,
        {},
        None,
    )
    assert record.val_bpb == 1.25 and not record.sealed and record.comparable
    assert record.extra == {"note": "from 2025"} and record.to_dict()["note"] == "from 2025"
    # on disk: a run whose shard holds it opens, for reading and for writing (elites rebuilt)
    RunArchive.create(tmp_path / "r", {}, grid=small_grid()).close()
    shard = tmp_path / "r" / "evals" / "shard-000000.json"
    shard.write_text(json.dumps({"evaluations": {"1": old}}))
    with RunArchive.open(tmp_path / "r") as reader:
        assert reader.get("e000001").val_bpb == 1.25
        assert [r.id for r in reader.evaluations()] == ["e000001"]
    with RunArchive.open(tmp_path / "r", writer=True) as writer:
        assert [e.genome for e in writer.elites()] == ["a" * 64]


def _record(number: int, operator: str, bpb: float, split: str = "val") -> Evaluation:
    return Evaluation(
        f"e{number:06d}",
        "g" * 64,
        EvalResult("ok", val_bpb=bpb, split=split),
        operator=operator,
        parents=["p" * 64],
    )


def test_repeats_are_one_definition_and_a_sealed_score_never_counts() -> None:
    """The engine's resume and the LLM context agree on what a repeat is (a "test" record was
    not one for the context's origin), and a test-split score never enters a mean."""
    assert REPEAT_OPERATORS == {"reeval", "race", "test"}
    test = _record(1, "test", 1.0, split="test")
    child = _record(2, "llm_mutate", 3.0)
    race = _record(3, "race", 2.0)
    assert test.is_repeat and race.is_repeat and not child.is_repeat
    assert origin([test, race, child]) is child
    assert origin([test, race]) is None
    assert score([test, child, race]) == pytest.approx(2.5)  # the sealed 1.0 left out
    assert score([test]) is None
