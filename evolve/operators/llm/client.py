"""Calls to OpenAI-compatible endpoints, with the bookkeeping a long unattended run needs.

Bounded: each HTTP attempt has `timeout` seconds and the openai client retries
429/5xx/timeouts/dropped connections `max_retries` times with backoff, so one
call takes at most about (max_retries + 1) * timeout plus the backoff (up to
8 s a retry, or a server's Retry-After of up to 2 minutes).
Failures raise `LLMError` (a `VariationError`, which the engine counts and
survives); repeated failures mark the LLM down and pause LLM calls for `cooldown`
seconds so the built-in operators carry the run meanwhile (with no built-in
operator configured, the next call waits the pause out instead of failing at
once); after the pause one call probes it again. Going down, coming back and
reaching the cost cap are each told once through `on_event`, which the engine
prints as its own line. Every call's tokens and cost are counted; the totals
live in `<run>/llm.json` so a cost cap holds across resumes.
"""

from __future__ import annotations

import copy
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.archive.atomic import atomic_write_json, read_json
from evolve.errors import UserError
from evolve.operators.base import VariationError
from evolve.operators.llm.settings import LLMSettings, ModelSpec

CHARS_PER_TOKEN = 3  # a pessimistic guess, used only where the server reports no usage
OUTPUT_GUESS = 8192  # output tokens assumed for a call when max_tokens is not set
# What a 200 reply that is not a chat completion raises (bad JSON, no choices, no message).
BAD_REPLY = (ValueError, LookupError, AttributeError, TypeError)


EVENTS_KEPT = 50  # newest down/up/cap events kept in llm.json


class LLMError(VariationError):
    """No usable reply: the call failed after retries, or LLM calls are stopped or paused."""


@dataclass
class Reply:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float
    seconds: float


class LLM:
    """A thread-safe handle on the configured model ensemble."""

    def __init__(
        self,
        settings: LLMSettings,
        stats_path: Path | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not settings.enabled:
            raise ValueError("LLM settings name no model")
        self.settings = settings
        self.stats_path = stats_path
        self.on_event = on_event or (lambda message: None)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str | None, str], Any] = {}
        self._reserved = 0.0  # cost set aside for calls in flight
        self._streak = 0  # failures in a row
        self._paused_until = 0.0
        self._in_flight = 0
        self._abandoned = False  # the run stopped with calls in flight; they are counted already
        self._down_since: float | None = None  # wall time it was marked down; None: up
        self._failed_while_down = 0
        # Whether built-in operators can make children without the LLM (wiring sets it from the
        # operator mix): what the lines about an LLM down or capped say the run does instead.
        self.builtin = True
        self.totals = _load(stats_path)
        self.stopped = self.totals.get("stopped", "")
        for model in settings.models:  # fail at start, not in the middle of the run
            key_env = model.api_key_env or settings.api_key_env
            endpoint = model.base_url or settings.base_url or os.environ.get("OPENAI_BASE_URL")
            if not endpoint and not os.environ.get(key_env):
                raise UserError(
                    f"no API key for LLM model {model.name}",
                    f"{key_env} is not set",
                    f"export {key_env}=..., or point --llm-base-url at your server",
                )

    # --- choosing --------------------------------------------------------------------

    def pick(self, rng: random.Random) -> ModelSpec:
        """A model of the ensemble, drawn by weight."""
        models = [m for m in self.settings.models if m.weight > 0]
        return rng.choices(models, weights=[m.weight for m in models])[0]

    def available(self) -> bool:
        """False once the cost cap stopped calls, and while paused after failures."""
        return not self.stopped and time.monotonic() >= self._paused_until

    # --- calling ---------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]], model: ModelSpec) -> Reply:
        """One chat completion; raises LLMError when it fails or the cost cap is reached."""
        import openai

        guess = model.cost(
            sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN,
            self.settings.max_tokens or OUTPUT_GUESS,
        )
        self._admit(guess)
        started = time.monotonic()
        try:
            response = self._client(model).chat.completions.create(
                model=model.name, messages=messages, **self._options(model)
            )
            text = response.choices[0].message.content
            if not isinstance(text, str):
                raise LLMError(f"{model.name} sent a reply without text")
        except (openai.OpenAIError, LLMError, *BAD_REPLY) as exc:
            self._failed(model, guess, exc)
            raise LLMError(f"LLM call to {model.name} failed: {_describe(exc)}") from exc
        except BaseException as exc:  # a bug or an interrupt: settle the books, then let it through
            self._failed(model, guess, exc)
            raise
        usage = getattr(response, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        if tokens_in is None or tokens_out is None:  # some servers report no usage
            tokens_in = sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN
            tokens_out = len(text) // CHARS_PER_TOKEN
        reply = Reply(
            text,
            model.name,
            int(tokens_in),
            int(tokens_out),
            model.cost(int(tokens_in), int(tokens_out)),
            time.monotonic() - started,
        )
        self._succeeded(reply, guess)
        return reply

    def _options(self, model: ModelSpec) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if model.temperature is not None:
            options["temperature"] = model.temperature
        if self.settings.max_tokens is not None:
            options["max_tokens"] = self.settings.max_tokens
        return options

    def _client(self, model: ModelSpec) -> Any:
        import openai

        base_url = model.base_url or self.settings.base_url
        key_env = model.api_key_env or self.settings.api_key_env
        with self._lock:
            client = self._clients.get((base_url, key_env))
            if client is None:  # local servers usually want no key, but the client needs one
                client = openai.OpenAI(
                    api_key=os.environ.get(key_env) or "unused",
                    base_url=base_url,
                    timeout=self.settings.timeout,
                    max_retries=self.settings.max_retries,
                )
                self._clients[(base_url, key_env)] = client
            return client

    # --- bookkeeping ------------------------------------------------------------------

    def _admit(self, guess: float) -> None:
        """Count the call and set its cost aside, or refuse it for good once over the cap.

        While paused it waits the pause out (the proposer only calls a paused LLM
        when no other operator is configured), then the call probes the endpoint.
        """
        while (left := self._paused_until - time.monotonic()) > 0 and not self.stopped:
            time.sleep(left)
        with self._lock:
            if self.stopped or self._abandoned:
                raise LLMError(self.stopped or "the run is stopping")
            cap = self.settings.max_cost
            if cap is not None and self.totals["cost"] + guess > cap:
                self.stopped = (
                    f"LLM cost cap ${cap:g} reached (spent ${self.totals['cost']:.4f}): "
                    "no more LLM calls; "
                    + (
                        "the built-in operators carry on"
                        if self.builtin
                        else "no other operator is configured, so no new child can be made"
                    )
                )
                self.totals["stopped"] = self.stopped
                self._remember(self.stopped)
                self._save()
                message = self.stopped
            elif cap is not None and self.totals["cost"] + self._reserved + guess > cap:
                # Only the worst cases of the calls in flight are over: refuse this one, not all.
                raise LLMError(f"LLM cost cap ${cap:g}: the calls in flight may use the rest")
            else:
                self._reserved += guess
                self._in_flight += 1
                self.totals["calls"] += 1
                return
        self.on_event(message)
        raise LLMError(message)

    def abandon(self) -> None:
        """The run stops without waiting for the calls in flight: count each at its worst-case
        cost, since the server may bill it, so the cost cap still holds after a resume."""
        with self._lock:
            if self._abandoned:
                return
            self._abandoned = True  # and no call starts after this
            if self._in_flight:
                self.totals["abandoned"] += self._in_flight
                self.totals["cost"] += self._reserved
                self._save()

    def _succeeded(self, reply: Reply, guess: float) -> None:
        message = ""
        with self._lock:
            self._in_flight -= 1
            if self._abandoned:
                return
            self._reserved -= guess
            self._streak = 0
            if self._down_since is not None:
                message = (
                    f"LLM answers again after {_duration(time.time() - self._down_since)} "
                    f"down ({self._failed_while_down} failed call(s) meanwhile): "
                    "LLM operators resume"
                )
                self._down_since, self._failed_while_down = None, 0
                self._remember(message)
            t = self.totals
            t["input_tokens"] += reply.input_tokens
            t["output_tokens"] += reply.output_tokens
            t["tokens"] = t["input_tokens"] + t["output_tokens"]
            t["cost"] += reply.cost
            row = t["by_model"].setdefault(reply.model, _zero_model())
            row["calls"] += 1
            row["input_tokens"] += reply.input_tokens
            row["output_tokens"] += reply.output_tokens
            row["cost"] += reply.cost
            self._save()
        if message:
            self.on_event(message)

    def _failed(self, model: ModelSpec, guess: float, exc: BaseException) -> None:
        kind = _kind(exc)
        message = ""
        with self._lock:
            self._in_flight -= 1
            if self._abandoned:
                return
            self._reserved -= guess
            self._streak += 1
            self.totals["failures"] += 1
            self.totals["errors"][kind] = self.totals["errors"].get(kind, 0) + 1
            self.totals["by_model"].setdefault(model.name, _zero_model())["failures"] += 1
            if self._down_since is not None:
                self._failed_while_down += 1
                if self.settings.cooldown > 0:  # the probe failed: pause again, without a word
                    self._paused_until = time.monotonic() + self.settings.cooldown
            elif self._streak >= self.settings.failures_before_cooldown:
                message = self._go_down(
                    f"{self._streak} failed calls in a row, the last {_describe(exc)}"
                )
            self._save()
        if message:
            self.on_event(message)

    def mark_down(self, reason: str) -> str:
        """Start (or resume) a run with an LLM that does not answer: paused, probed later.

        Returns the line to show; `on_event` is not called (the engine is not running yet)."""
        with self._lock:
            message = self._go_down(reason)
            self._save()
        return message

    def _go_down(self, reason: str) -> str:
        """Mark the LLM down (caller holds the lock); the one line that says so and what now."""
        self._down_since = time.time()
        self._failed_while_down = 0
        self._streak = 0
        self.totals["outages"] += 1
        retry = "at once"
        if self.settings.cooldown > 0:
            self._paused_until = time.monotonic() + self.settings.cooldown
            retry = f"every {self.settings.cooldown:g} s"
        instead = (
            "the built-in operators carry on"
            if self.builtin
            else "no other operator is configured, so new children wait for it"
        )
        message = f"LLM down: {reason}; {instead}; trying the LLM again {retry}"
        self._remember(message)
        return message

    def _remember(self, message: str) -> None:
        """Keep an event in llm.json (caller holds the lock and saves)."""
        events = self.totals["events"]
        events.append({"at": time.time(), "what": message})
        del events[:-EVENTS_KEPT]

    def count_probe(self, model: ModelSpec, tokens_in: int, tokens_out: int) -> None:
        """Count the tokens of a start-up check (saved with the next call's totals)."""
        with self._lock:
            t = self.totals
            t["input_tokens"] += tokens_in
            t["output_tokens"] += tokens_out
            t["tokens"] = t["input_tokens"] + t["output_tokens"]
            t["cost"] += model.cost(tokens_in, tokens_out)

    def reject(self, reason: str) -> None:
        """Count a reply that arrived but could not be used (no match, syntax error, ...)."""
        with self._lock:
            rejected = self.totals["rejected"]
            rejected[reason] = rejected.get(reason, 0) + 1
            self._save()

    def stats(self) -> dict[str, Any]:
        """Totals for the progress display: calls, failures, cost, tokens and the details."""
        with self._lock:
            stats = copy.deepcopy(self.totals)
        stats["paused"] = time.monotonic() < self._paused_until
        stats["down"] = self._down_since is not None
        stats["max_cost"] = self.settings.max_cost
        return stats

    def _save(self) -> None:
        if self.stats_path is not None:
            atomic_write_json(self.stats_path, {**self.totals, "max_cost": self.settings.max_cost})


def _zero_model() -> dict[str, Any]:
    return {"calls": 0, "failures": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}


def _load(path: Path | None) -> dict[str, Any]:
    """Totals so far: zero for a new run, the stored ones when a run resumes."""
    totals: dict[str, Any] = {
        "calls": 0,
        "failures": 0,
        "tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost": 0.0,
        "errors": {},
        "rejected": {},
        "by_model": {},
        "stopped": "",
        "abandoned": 0,
        "outages": 0,
        "events": [],
    }
    if path is not None:
        try:
            stored = read_json(path)
        except FileNotFoundError:
            stored = {}
        totals.update({k: v for k, v in stored.items() if k in totals})
    return totals


def _kind(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    return "bad_reply" if isinstance(exc, (LLMError, *BAD_REPLY)) else "other"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
