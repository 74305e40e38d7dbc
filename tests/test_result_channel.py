"""The result channel is hostile input: whatever a genome writes there ends as a record.

The fuzz test sends adversarial and random messages through the runner's own parsing
path (`_take_messages`, which `_supervise` calls on every chunk it reads); the genome
tests write garbage from a real sandboxed process, and the run goes on after them.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from evolve.record import EvalResult
from evolve.runner import RunSettings, channel, run_genome
from evolve.runner.outcome import Outcome, failure_reason
from evolve.runner.run import _record, _take_messages
from tests.conftest import genome

SANDBOX = (
    b'{"event": "sandbox", "landlock": 0, "cgroups": 0, "rlimits": [], '
    b'"caps_dropped": false, "seccomp": false}\n'
)
HONEST = [
    SANDBOX,
    b'{"event": "training_done", "steps": 10, "tokens": 2560, "cuda_peak_bytes": null}\n',
    b'{"event": "submitted", "path": "model.pt2", "seq_len": 32}\n',
]


def _adversarial() -> list[bytes]:
    """Messages a genome would try first: each one broke or fooled some parser once."""
    deep = 100_000
    return [
        b"[" * deep + b"]" * deep,
        b'{"event": "training_done", "steps": ' + b"[" * deep + b"]" * deep + b"}",
        b'{"event": "training_done", "steps": Infinity}',
        b'{"event": "training_done", "steps": NaN}',
        b'{"event": "training_done", "steps": -Infinity}',
        b'{"event": "training_done", "steps": 1e999}',
        b'{"event": "training_done", "steps": 1.5}',
        b'{"event": "training_done", "steps": ' + b"9" * 5000 + b"}",
        b'{"event": "training_done", "steps": ' + b"9" * 19 + b"}",
        b'{"event": "training_done", "steps": -1}',
        b'{"event": "training_done", "steps": true}',
        b'{"event": "training_done", "steps": "100"}',
        b'{"event": "training_done", "tokens": {"a": 1}}',
        b'{"event": "training_done", "cuda_peak_bytes": [1]}',
        b'{"event": "training_done", "steps": 1, "val_bpb": 0.1}',
        b'{"event": "submitted", "seq_len": 0}',
        b'{"event": "submitted", "seq_len": 1e3}',
        b'{"event": "submitted", "seq_len": 99999999999}',
        b'{"event": "submitted", "seq_len": 32, "path": ' + b'"' + b"a" * 3000 + b'"}',
        b'{"event": "sandbox", "landlock": 7, "cgroups": 2, "rlimits": ["as"], '
        b'"caps_dropped": true, "seccomp": true}',
        b'{"event": ["training_done"]}',
        b'{"event": null}',
        b'{"event": "score", "val_bpb": 0.0}',
        b'{"steps": 1}',
        b'"training_done"',
        b"[]",
        b"null",
        b"1",
        b"",
        b'{"event": "training_done"' + b" " * 5000 + b"}",
        b"\xff\xfe{\x00}\x00",
        b"\xef\xbb\xbf{}",
        b'{"event": "\xed\xa0\x80"}',
        b'{"event": "training_done", "steps": 1, "steps": "x"}',
        b'{"event": "training\\u0000_done"}',
        b"\x00" * 100,
        b'{"__proto__": {"event": "submitted"}}',
    ]


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(
            [0, -1, 1, 2**63, -(2**63), 10**18, 10**18 + 1, rng.randrange(-(10**9), 10**9)]
        )
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e308, float("inf"), float("nan"), rng.random() * 1e6])
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice(list(channel.SCHEMAS) + ["model.pt2", "ok", ""])
    if kind == 5:
        return rng.randrange(1, 1 << 20)
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "event",
        "steps",
        "tokens",
        "cuda_peak_bytes",
        "seq_len",
        "path",
        "landlock",
        "cgroups",
        "rlimits",
        "caps_dropped",
        "seccomp",
        "val_bpb",
        "t",
    ]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _random_message(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if roll < 0.25:  # a valid message with one byte changed
        line = bytearray(rng.choice(HONEST[1:]).rstrip(b"\n"))
        line[rng.randrange(len(line))] = rng.randrange(256)
        return bytes(line)
    message = _random_value(rng)
    if rng.random() < 0.6:
        message = {
            "event": rng.choice(list(channel.SCHEMAS)),
            **(message if isinstance(message, dict) else {"steps": message}),
        }
    return json.dumps(message, allow_nan=True).encode()


def _check_outcome(outcome: Outcome) -> None:
    """What got through is exactly what the honest harness could have sent."""
    done = outcome.events.get("training_done")
    if done is not None:
        for key in ("steps", "tokens", "cuda_peak_bytes"):
            value = done[key]
            assert value is None or (type(value) is int and 0 <= value <= channel.MAX_BYTES * 1000)
    submitted = outcome.events.get("submitted")
    if submitted is not None:
        assert type(submitted["seq_len"]) is int and 0 < submitted["seq_len"] <= channel.MAX_SEQ_LEN
    settings = RunSettings(budget=1.0, mem_limit_bytes=None)
    status, reason = failure_reason(outcome, settings, NO_LOG)
    record = _record(outcome, status, reason, {}, settings, _Data(), NO_LOG, [])
    assert record.status in ("invalid", "crashed", "over_budget") or status is None
    text = record.to_json()
    json.loads(text, parse_constant=pytest.fail)  # strict JSON: no NaN, no Infinity
    assert EvalResult.from_dict(json.loads(text)) == record


NO_LOG = Path("/nonexistent/evolve.log")  # a missing log reads as empty


class _Data:
    fingerprint = "0" * 16


def test_fuzz_result_channel_never_raises():
    """10,000+ hostile messages, whole and split at random byte boundaries: every one is
    accepted as a well-formed honest message or flagged as tampering, nothing raises, and the
    record that follows is valid JSON."""
    rng = random.Random(20261202)
    messages = _adversarial() * 10 + [_random_message(rng) for _ in range(10_000)]
    flagged = accepted = 0
    start = time.monotonic()
    for index, message in enumerate(messages):
        outcome = Outcome()
        stream = SANDBOX + message + b"\n" + (HONEST[1] if index % 2 else b"")
        buffer = b""
        while stream:  # the pipe delivers whatever chunks it likes
            cut = rng.randrange(1, len(stream) + 1)
            buffer = _take_messages(buffer + stream[:cut], outcome, start)
            stream = stream[cut:]
        assert buffer == b"" or outcome.protocol_error
        if outcome.protocol_error:
            flagged += 1
            assert len(outcome.protocol_error) < 400
        else:
            accepted += 1
        _check_outcome(outcome)
    assert flagged > 9000 and accepted > 10  # both paths really taken
    for message in _adversarial():
        outcome = Outcome()
        _take_messages(SANDBOX + message + b"\n", outcome, start)
        if b'"landlock": 7' not in message:  # a second sandbox report is also refused
            assert outcome.protocol_error, message[:80]


def test_honest_messages_pass_and_the_last_training_report_counts():
    outcome = Outcome()
    early = b'{"event": "training_done", "steps": 1, "tokens": 0}\n'
    rest = _take_messages(SANDBOX + early + HONEST[1] + HONEST[2][:10], outcome, time.monotonic())
    assert outcome.protocol_error is None and rest == HONEST[2][:10]
    assert outcome.events["training_done"]["steps"] == 10  # the later report replaced the early one
    _take_messages(rest + HONEST[2][10:], outcome, time.monotonic())
    assert outcome.events["submitted"]["seq_len"] == 32


@pytest.mark.parametrize(
    "payload",
    ids=["nesting", "infinity", "digits", "type", "no-newline", "flood"],
    argvalues=[
        b"[" * 200_000 + b"\n",
        b'{"event": "training_done", "steps": Infinity}\n',
        b'{"event": "training_done", "steps": ' + b"9" * 4000 + b"}\n",
        b'{"event": "submitted", "seq_len": "32"}\n',
        b"x" * 200_000,  # no newline at all
        b'{"event": "training_done", "steps": 1}\n' * 100,
    ],
)
def test_garbage_from_a_genome_is_invalid(evaluate, payload):
    """A real genome writes garbage and sleeps: killed at once and `invalid` (before, one
    such line raised out of run_genome and crashed `evolve start` and every resume)."""
    started = time.monotonic()
    # the biggest payloads, as hex in the source, are over the default 64 KiB source cap
    run = evaluate(genome("garbage_pipe.py", PAYLOAD_HEX=payload.hex()), max_source_bytes=1 << 20)
    assert run.result.status == "invalid", (run.result.reason, run.log[-2000:])
    assert "tampered" in run.result.reason and run.result.val_bpb is None
    assert time.monotonic() - started < 30  # killed, not left to its 60 s sleep


def test_the_next_evaluation_runs_after_garbage(evaluate, seed_source):
    payload = b'{"event": "training_done", "steps": ' + b"[" * 50_000 + b"\n"
    first = evaluate(genome("garbage_pipe.py", PAYLOAD_HEX=payload.hex()))
    assert first.result.status == "invalid"
    after = evaluate(seed_source, budget=1.0)
    assert after.result.status == "ok", (after.result.reason, after.log[-2000:])


def test_report_on_time_then_train_on_is_over_budget(evaluate, seed_source):
    """Hole 9: report `training_done` on time, train until shortly before the hand-in bound,
    then hand in (which reports again). The last report counts, so this is over budget;
    under a first-report rule the hand-in at ~4 s would pass (bound: 1 + 1 + 8 / 2 = 6 s)."""
    source = seed_source.replace(
        "    use_bf16 =",
        "    run._send(event='training_done', steps=1, tokens=0, cuda_peak_bytes=None)\n"
        "    use_bf16 =",
    )
    source = source.replace("while run.time_left() > 0:", "while run.time_left() > -3.0:")
    run = evaluate(source, budget=1.0, grace=8.0)
    assert run.result.status == "over_budget", (run.result.reason, run.log[-2000:])
    assert "trained for" in run.result.reason
    assert run.result.training_seconds > 3.0  # the late figures, not the early report


def test_a_runner_fault_is_a_lost_record_not_an_exception(dataset, tmp_path, seed_source):
    """An infrastructure fault (here: the log path is a folder) ends as `lost`, which the
    engine retries, instead of an exception out of run_genome."""
    (tmp_path / "log").mkdir()
    result = run_genome(
        seed_source,
        dataset,
        RunSettings(budget=1.0, threads=1),
        tmp_path / "work",
        tmp_path / "log",
    )
    assert result.status == "lost" and "runner failed" in result.reason, result.reason
