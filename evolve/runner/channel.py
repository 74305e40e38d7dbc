"""The result channel: the control pipe from the genome process, read as hostile input.

Only harness code writes to this pipe (the trusted prologue, then `Session.submit`),
but it runs inside the genome's process, so the genome can write anything to it:
bytes that are not JSON, nesting deep enough to overflow a parser, `NaN`, numbers
with thousands of digits, wrong types, unknown events, floods. The honest harness
writes at most a few short, well-formed lines, so any message that breaks the
protocol is tampering: `parse` raises `ProtocolError`, and the runner kills the
genome and records the evaluation as `invalid` with the reason. Nothing here
raises anything else.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_LINE = 4096  # bytes of one message; the honest ones are under 200
MAX_MESSAGES = 64  # the honest harness sends three
MAX_COUNT = 10**18  # steps and tokens: more than any run can do
MAX_BYTES = 1 << 50  # reported memory: a petabyte
MAX_SEQ_LEN = 1 << 20  # the evaluator refuses longer ones too
MAX_LOSS = 1e6  # a reported training loss; the honest harness sends only finite ones below
MAX_CURVE_MESSAGES = 2048  # `curve` points; the honest harness sends at most 513 (Session.log)


class ProtocolError(ValueError):
    """A message that the honest harness never sends."""


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"a non-finite number ({name})")


def _count(limit: int, optional: bool = True):
    def check(value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise ProtocolError(f"{_show(value)} is not a whole number in 0..{limit}")
        return value

    return check


def _seq_len(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SEQ_LEN:
        raise ProtocolError(f"seq_len {_show(value)} is not a whole number in 1..{MAX_SEQ_LEN}")
    return value


def _loss(value: Any) -> float:
    """A finite number in 0..MAX_LOSS (JSON `1e999` parses as infinity: refused here)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= MAX_LOSS
    ):
        raise ProtocolError(f"loss {_show(value)} is not a finite number in 0..{MAX_LOSS:g}")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{_show(value)} is not true or false")
    return value


def _names(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > 16
        or not all(isinstance(v, str) and v.isidentifier() and len(v) <= 16 for v in value)
    ):
        raise ProtocolError(f"{_show(value)} is not a short list of names")
    return value


def _path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError(f"{_show(value)} is not a file name")
    return value


# event -> {field: validator}. A field may be left out where its validator accepts None
# (it is then None); that is safe to allow, since the runner takes None for "unknown".
SCHEMAS: dict[str, dict[str, Any]] = {
    "sandbox": {
        "landlock": _count(64, optional=False),
        "cgroups": _count(8, optional=False),
        "rlimits": _names,
        "caps_dropped": _flag,
        "seccomp": _flag,
    },
    "training_done": {
        "steps": _count(MAX_COUNT),
        "tokens": _count(MAX_COUNT),
        "cuda_peak_bytes": _count(MAX_BYTES),
    },
    "submitted": {"path": _path, "seq_len": _seq_len},
    # One point of the training curve (`Session.log(step=..., loss=...)`). No time field: the
    # runner stamps each point with its own clock on arrival.
    "curve": {"step": _count(MAX_COUNT, optional=False), "loss": _loss},
}


def parse(line: bytes) -> tuple[str, dict[str, Any]]:
    """One message: (event, fields checked against its schema), or ProtocolError."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a message of {len(line)} bytes (at most {MAX_LINE})")
    try:
        message = json.loads(line, parse_constant=_refuse_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError, TypeError) as exc:  # bad JSON, encoding, 5000 digits
        raise ProtocolError(f"a message that is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message that is not an object ({type(message).__name__})")
    event = message.pop("event", None)
    schema = SCHEMAS.get(event) if isinstance(event, str) else None
    if schema is None:
        raise ProtocolError(f"an unknown event {_show(event)}")
    extra = sorted(set(message) - set(schema))
    if extra:
        raise ProtocolError(f"{event} with unknown fields {_show(extra)}")
    try:
        return event, {name: check(message.get(name)) for name, check in schema.items()}
    except ProtocolError as exc:
        raise ProtocolError(f"{event}: {exc}") from None


def _show(value: Any) -> str:
    """A short, printable rendering of hostile input for a reason line."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int too long to print
        text = f"<{type(value).__name__}>"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= 60 else text[:57] + "..."
