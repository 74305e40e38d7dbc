"""LLM operators through the real openai client against a local scripted server.

Each test scripts the server's replies (good edits, unusable replies, HTTP
errors, dropped connections, slow replies) and checks what the operator made
of them, what it told the LLM, and what it counted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.engine.proposer import Proposer
from evolve.operators import OperatorMix, Parent, VariationError
from evolve.operators.llm import LLM, LLMError, parse_llm
from evolve.operators.llm.wiring import STATS_FILE
from evolve.record import EvalResult
from evolve.selection import CuriosityTracker
from evolve.testkit.grids import small_grid
from evolve.testkit.llm_server import FakeLLM, drop, fail, garbage, say
from evolve.testkit.tiny import tiny_genome

SEED = tiny_genome()


def edit(search: str, replace: str, idea: str = "an idea") -> str:
    return f"IDEA: {idea}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


GOOD = edit("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = 0.05", "lower weight decay")


@dataclass
class Rig:
    archive: RunArchive
    llm: LLM
    proposer: Proposer
    events: list[str]

    def op(self, name: str):
        return next(op for op in self.proposer.mix.operators if op.name == name)

    def stats(self) -> dict:
        return json.loads((self.archive.path / STATS_FILE).read_text())


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def rig(tmp_path: Path, fake: FakeLLM):
    made: list[RunArchive] = []

    def build(weights: dict | None = None, models: list | None = None, **table) -> Rig:
        archive = RunArchive.create(tmp_path / f"run{len(made)}", {}, grid=small_grid())
        made.append(archive)
        seed = _history(archive)
        settings = parse_llm(
            {
                "models": models or ["fake-1"],
                "base_url": fake.url,
                "timeout": 2,
                "max_retries": 1,
                **table,
            }
        )
        events: list[str] = []
        llm = LLM(settings, stats_path=archive.path / STATS_FILE, on_event=events.append)
        weights = weights or {"llm_mutate": 1}
        options = {n: {"llm": llm} for n in weights if n.startswith("llm_")}
        mix = OperatorMix(weights, cxpb=0.0, options=options)
        proposer = Proposer(archive, mix, "uniform", [seed], threading.RLock(), CuriosityTracker())
        return Rig(archive, llm, proposer, events)

    yield build
    for archive in made:
        archive.close()


def _history(archive: RunArchive) -> str:
    """A seed, one improvement on it, an elite in another cell, a crash, and a training log."""
    seed = archive.add_evaluation(
        EvalResult("ok", val_bpb=2.0, params=100_000),
        SEED,
        generation=0,
        operator="seed",
        idea="seed genome",
    )
    better = SEED.replace("WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.2")
    child = archive.add_evaluation(
        EvalResult("ok", val_bpb=1.9, params=100_000),
        better,
        generation=1,
        parents=[seed.genome],
        operator="hyper_mutate",
        idea="WEIGHT_DECAY 0.1 -> 0.2",
    )
    archive.log_path(child.id).write_text("step 10 loss 3.0\nstep 20 loss 2.5 lr 0.003\n")
    wide = SEED.replace("N_EMBD = 32", "N_EMBD = 512")
    archive.add_evaluation(
        EvalResult("ok", val_bpb=1.8, params=10_000_000),
        wide,
        generation=1,
        parents=[seed.genome],
        operator="llm_mutate",
        idea="a wide model",
    )
    archive.add_evaluation(
        EvalResult("crashed", reason="out of memory at step 3"),
        SEED.replace("BATCH_SIZE = 4", "BATCH_SIZE = 4096"),
        generation=1,
        parents=[seed.genome],
        operator="llm_mutate",
        idea="a huge batch",
    )
    return seed.genome


def narrow_elite(rig: Rig) -> Parent:
    """The improved child: the elite of the small-model cell."""
    return next(p for p in rig.proposer.parents() if "WEIGHT_DECAY = 0.2" in p.source)


def test_good_diff_makes_a_child_and_the_prompt_carries_the_runs_history(rig, fake) -> None:
    r = rig(models=[{"name": "fake-1", "price_in": 2.0, "price_out": 8.0}])
    fake.add(say(GOOD, usage=(1500, 300)))
    parent = narrow_elite(r)
    child = r.op("llm_mutate").vary([parent], random.Random(0))

    assert child.source == parent.source.replace("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = 0.05")
    assert child.idea == "lower weight decay" and child.parent_ids == [parent.id]
    assert child.meta["response"] == GOOD and child.meta["turns"] == 1
    system, user = (m["content"] for m in fake.requests[0]["messages"])
    assert "Simplicity criterion" in system and "<<<<<<< SEARCH" in system  # program.md + format
    assert parent.source.strip() in user and "1.9000" in user
    assert "WEIGHT_DECAY 0.1 -> 0.2 [hyper_mutate]: 2.0000 -> 1.9000 (-0.1000)" in user
    assert "step 20 loss 2.5" in user  # tail of the parent's log
    assert "a wide model" in user  # an elite of another cell
    assert "a huge batch -> out of memory at step 3" in user  # a recent failure and its reason
    assert child.meta["prompt"].startswith("### system\n") and user in child.meta["prompt"]
    stats = r.stats()
    assert (stats["calls"], stats["failures"], stats["tokens"]) == (1, 0, 1800)
    assert stats["cost"] == pytest.approx((1500 * 2.0 + 300 * 8.0) / 1e6)


def test_unmatched_search_goes_back_to_the_llm_and_the_resample_is_used(rig, fake) -> None:
    r = rig()
    fake.add(say(edit("DROPOUT = 0.1", "DROPOUT = 0.0")), say(GOOD))
    child = r.op("llm_mutate").vary([narrow_elite(r)], random.Random(0))

    assert "WEIGHT_DECAY = 0.05" in child.source and child.meta["turns"] == 2
    retry = fake.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert "could not be used" in retry[-1]["content"] and "DROPOUT = 0.1" in retry[-1]["content"]
    assert "DROPOUT = 0.1" in child.meta["prompt"]  # the failed turn is part of the stored prompt
    assert r.stats()["rejected"] == {"no_match": 1}


def test_full_rewrite_replaces_the_program(rig, fake) -> None:
    r = rig(rewrite_share=1.0)
    program = SEED.replace("N_LAYER = 1", "N_LAYER = 2")
    fake.add(say(f"IDEA: two layers\n```python\n{program}```\n"))
    child = r.op("llm_mutate").vary([narrow_elite(r)], random.Random(0))
    assert child.source == program and child.meta["format"] == "rewrite"
    assert "complete new program" in fake.requests[0]["messages"][0]["content"]


def test_prose_syntax_errors_and_broken_contracts_are_resampled_then_given_up(rig, fake) -> None:
    r = rig(resamples=3)
    no_submit = SEED.replace("run.submit(model, seq_len=SEQ_LEN, steps=step)", "pass")
    fake.add(
        say("I think a lower learning rate would help."),
        say(edit("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = (0.2")),
        say(f"```python\n{no_submit}```"),
        say("still no code"),
    )
    with pytest.raises(VariationError, match="no usable reply in 4 turn"):
        r.op("llm_mutate").vary([narrow_elite(r)], random.Random(0))
    assert len(fake.requests) == 4  # bounded by resamples + 1
    feedback = [req["messages"][-1]["content"] for req in fake.requests[1:]]
    assert "no SEARCH/REPLACE block" in feedback[0]
    assert "syntax error at line" in feedback[1]
    assert "run.submit" in feedback[2]
    assert r.stats()["rejected"] == {"no_code": 2, "syntax": 1, "contract": 1}


def test_duplicates_and_no_ops_are_told_to_the_llm(rig, fake) -> None:
    r = rig()
    parent = narrow_elite(r)
    comment_only = edit("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = 0.2  # same value")
    back_to_seed = edit("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = 0.1")  # the seed: already tried
    fake.add(say(comment_only), say(back_to_seed), say(GOOD))
    child = r.op("llm_mutate").vary([parent], random.Random(0))
    assert "WEIGHT_DECAY = 0.05" in child.source
    assert "changes no code" in fake.requests[1]["messages"][-1]["content"]
    assert "already tried" in fake.requests[2]["messages"][-1]["content"]
    assert r.stats()["rejected"] == {"unchanged": 1, "duplicate": 1}


def test_rate_limit_server_error_and_dropped_connection_are_retried(rig, fake) -> None:
    r = rig(max_retries=2)
    fake.add(
        fail(429), say(GOOD), fail(500), drop(), say(edit("GRAD_CLIP = 1.0", "GRAD_CLIP = 0.5"))
    )
    op, parent = r.op("llm_mutate"), narrow_elite(r)
    assert "WEIGHT_DECAY = 0.05" in op.vary([parent], random.Random(0)).source
    assert "GRAD_CLIP = 0.5" in op.vary([parent], random.Random(1)).source
    assert len(fake.requests) == 5
    stats = r.stats()
    assert (stats["calls"], stats["failures"]) == (2, 0)


def test_persistent_errors_fail_the_call_after_bounded_retries_and_are_counted(rig, fake) -> None:
    r = rig(max_retries=2, failures_before_cooldown=100)
    fake.add(fail(500), fail(500), fail(500), fail(429), fail(429), fail(429))
    op, parent = r.op("llm_mutate"), narrow_elite(r)
    for _ in range(2):
        with pytest.raises(LLMError, match="failed"):
            op.vary([parent], random.Random(0))
    assert len(fake.requests) == 6  # 1 + max_retries each, then it gives up
    stats = r.stats()
    assert (stats["calls"], stats["failures"]) == (2, 2)
    assert stats["errors"] == {"http_500": 1, "rate_limit": 1}


def test_a_reply_that_is_not_a_chat_completion_is_a_counted_failure(rig, fake) -> None:
    r = rig()
    fake.add(garbage(), garbage(b'{"choices": []}'), say(GOOD))
    op, parent = r.op("llm_mutate"), narrow_elite(r)
    for _ in range(2):
        with pytest.raises(LLMError, match="failed"):
            op.vary([parent], random.Random(0))
    assert "WEIGHT_DECAY = 0.05" in op.vary([parent], random.Random(0)).source
    assert r.stats()["errors"] == {"bad_reply": 2}


def test_a_reply_slower_than_the_timeout_is_abandoned_in_bounded_time(rig, fake) -> None:
    r = rig(timeout=0.5, max_retries=1)
    fake.add(say(GOOD, delay=3), say(GOOD, delay=3), say(GOOD, delay=3), say(GOOD))
    op, parent = r.op("llm_mutate"), narrow_elite(r)
    started = time.monotonic()
    with pytest.raises(LLMError, match="APITimeoutError"):
        op.vary([parent], random.Random(0))
    assert time.monotonic() - started < 3  # two attempts of 0.5 s plus a short backoff
    # A timeout then a fast reply: the client's retry saves the call.
    assert "WEIGHT_DECAY = 0.05" in op.vary([parent], random.Random(0)).source
    assert r.stats()["errors"] == {"timeout": 1}


def test_repeated_failures_pause_the_llm_and_builtin_operators_carry_on(rig, fake) -> None:
    r = rig(
        weights={"llm_mutate": 5, "hyper_mutate": 1},
        max_retries=0,
        failures_before_cooldown=2,
        cooldown=60,
    )
    fake.add(fail(500), fail(500))
    for _ in range(2):
        with pytest.raises(LLMError):
            r.op("llm_mutate").vary([narrow_elite(r)], random.Random(0))
    assert not r.llm.available() and any("LLM down" in e and "every 60 s" in e for e in r.events)
    children = [r.proposer.child(random.Random(seed)) for seed in range(5)]
    assert {c.operator for c in children} == {"hyper_mutate"}
    assert len(fake.requests) == 2  # nothing was sent while paused


def test_with_only_llm_operators_a_pause_is_waited_out_not_failed_fast(rig, fake) -> None:
    r = rig(max_retries=0, failures_before_cooldown=1, cooldown=1.0)
    fake.add(fail(500), say(GOOD))
    with pytest.raises(LLMError):
        r.op("llm_mutate").vary([narrow_elite(r)], random.Random(0))
    assert not r.llm.available()
    started = time.monotonic()
    child = r.proposer.child(random.Random(1))
    assert child.operator == "llm_mutate" and time.monotonic() - started > 0.5


def test_cost_cap_stops_llm_calls_for_good_and_says_so(rig, fake) -> None:
    r = rig(
        weights={"llm_mutate": 5, "hyper_mutate": 1},
        max_cost=0.01,
        max_tokens=500,
        models=[{"name": "fake-1", "price_in": 1.0, "price_out": 4.0}],
    )
    fake.add(say(GOOD, usage=(4000, 500)), say(GOOD))  # the first call costs $0.006
    op = r.op("llm_mutate")
    op.vary([narrow_elite(r)], random.Random(0))
    with pytest.raises(LLMError, match="cost cap"):
        op.vary([narrow_elite(r)], random.Random(0))
    assert len(fake.requests) == 1 and r.stats()["cost"] <= 0.01
    assert "cost cap $0.01 reached" in r.stats()["stopped"] and r.events
    assert {r.proposer.child(random.Random(s)).operator for s in range(3)} == {"hyper_mutate"}
    # The cap holds across a resume: a new handle reads the stored totals.
    again = LLM(r.llm.settings, stats_path=r.archive.path / STATS_FILE)
    assert not again.available()


def test_crossover_shows_both_parents_and_names_both(rig, fake) -> None:
    r = rig(weights={"llm_mutate": 1, "llm_crossover": 1})
    first = narrow_elite(r)
    second = next(p for p in r.proposer.parents() if "N_EMBD = 512" in p.source)
    assert first.cell != second.cell
    fake.add(say(edit("N_EMBD = 32", "N_EMBD = 64", "borrow B's width, halfway")))
    child = r.op("llm_crossover").vary([first, second], random.Random(0))
    assert child.parent_ids == [first.id, second.id] and "N_EMBD = 64" in child.source
    user = fake.requests[0]["messages"][1]["content"]
    assert "Program A" in user and "Program B" in user and "N_EMBD = 512" in user


def test_ensemble_draws_models_by_weight_with_their_temperatures(rig, fake) -> None:
    r = rig(
        models=[
            {"name": "big", "weight": 1, "temperature": 0.2},
            {"name": "small", "weight": 3, "temperature": 1.1},
        ]
    )
    op, parent = r.op("llm_mutate"), narrow_elite(r)
    for seed in range(12):
        fake.add(say(edit("WEIGHT_DECAY = 0.2", f"WEIGHT_DECAY = {0.3 + seed / 100:.2f}")))
        op.vary([parent], random.Random(seed))
    sent = [(req["model"], req["temperature"]) for req in fake.requests]
    assert set(sent) == {("big", 0.2), ("small", 1.1)}
    assert sum(m == "small" for m, _ in sent) > sum(m == "big" for m, _ in sent)
    assert set(r.stats()["by_model"]) == {"big", "small"}


def test_calls_in_flight_neither_stop_the_cap_for_good_nor_escape_abandon(tmp_path, fake) -> None:
    """Worst cases set aside for calls in flight refuse one more call, not all later ones; a
    run that stops abandons its calls (counted, kept across a resume) and starts none after."""
    model = {"name": "fake-1", "price_in": 1.0, "price_out": 4.0}
    settings = parse_llm(
        {
            "models": [model],
            "base_url": fake.url,
            "timeout": 10,
            "max_retries": 0,
            "max_cost": 0.05,
            "max_tokens": 5000,
        }
    )  # worst case $0.02 a call
    llm = LLM(settings, stats_path=tmp_path / STATS_FILE)
    spec, messages = settings.models[0], [{"role": "user", "content": "x"}]
    fake.add(say("slow", delay=1.5), say("slow", delay=1.5))
    slow = [threading.Thread(target=llm.complete, args=(messages, spec)) for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.5)  # both in flight: $0.04 set aside
    with pytest.raises(LLMError, match="in flight"):
        llm.complete(messages, spec)
    assert llm.available() and not llm.stats()["stopped"]
    llm.abandon()
    with pytest.raises(LLMError, match="stopping"):
        llm.complete(messages, spec)
    for thread in slow:
        thread.join()
    stored = LLM(settings, stats_path=tmp_path / STATS_FILE).stats()
    assert stored["abandoned"] == 2 and stored["cost"] == pytest.approx(0.04, abs=1e-3)
    assert not stored["stopped"]


def test_a_failed_variation_is_retried_with_another_operator_and_reported(rig, fake) -> None:
    r = rig(
        weights={"llm_mutate": 50, "hyper_mutate": 1}, max_retries=0, failures_before_cooldown=100
    )
    fake.add(fail(500))
    failures = []
    child = r.proposer.child(random.Random(0), lambda name, exc: failures.append((name, str(exc))))
    assert child.operator == "hyper_mutate"  # despite a weight of 1 against 50
    assert [name for name, _ in failures] == ["llm_mutate"] and "500" in failures[0][1]
    assert len(fake.requests) == 1
