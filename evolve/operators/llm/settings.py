"""The `[llm]` config table: endpoint, model ensemble, prices, limits; checked once, up front.

A run stores its config in the archive, so the table never holds an API key
itself, only the name of the environment variable that does (`api_key_env`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from evolve.errors import UserError

# USD per 1M (input, output) tokens. Only a fallback: `price_in`/`price_out` in the
# config win, and the start-up note prints the prices in use.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}
# The operator weights used when an LLM is configured and the config names none.
LLM_OPERATORS: dict[str, float] = {
    "llm_mutate": 3.0,
    "llm_crossover": 1.0,
    "hyper_mutate": 1.0,
    "hyper_crossover": 0.5,
}
# Command-line flags that land in the [llm] table: flag name -> table key.
FLAG_KEYS = {
    "llm_models": "models",
    "llm_base_url": "base_url",
    "max_llm_cost": "max_cost",
    "llm_concurrency": "concurrency",
    "llm_fallback": "fallback",
}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble. temperature None: the server's default."""

    name: str
    weight: float = 1.0
    temperature: float | None = None
    price_in: float | None = None  # USD per 1M input tokens
    price_out: float | None = None  # USD per 1M output tokens
    base_url: str | None = None  # overrides the table's base_url for this model
    api_key_env: str | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            (self.price_in or 0.0) * input_tokens + (self.price_out or 0.0) * output_tokens
        ) / 1e6


@dataclass(frozen=True)
class LLMSettings:
    models: tuple[ModelSpec, ...] = ()
    base_url: str | None = None  # None: the openai client's default (api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0  # seconds per HTTP attempt
    max_retries: int = 3  # the client retries 408/409/429/5xx/timeouts/dropped connections
    # USD for the whole run, resumes included. A call starts only if its worst case
    # (prompt + max_tokens, or 8192 output tokens when unset) still fits under the cap.
    max_cost: float | None = None
    max_tokens: int | None = None  # sent to the server only when set
    resamples: int = 3  # extra LLM turns after an unusable reply
    rewrite_share: float = 0.2  # share of proposals asked as a full rewrite
    aim_share: float = 0.25  # share of LLM mutations sent to an empty or weakly held neighbour cell
    # Proposals prepared in parallel with the evaluations. None: enough that no slot waits,
    # from measured LLM latency and evaluation time (4 to start, at most max(16, 2 x slots)).
    concurrency: int | None = None
    cooldown: float = 60.0  # seconds without LLM calls after repeated failures
    # An endpoint that is unreachable at start (or resume): False stops there (exit 2); True
    # starts with the LLM marked down, built-in operators carry on, and it is retried.
    fallback: bool = False
    failures_before_cooldown: int = 3
    program: str = "program.md"  # research instructions, re-read for every prompt
    lineage_depth: int = 5
    log_tail_lines: int = 40
    show_elites: int = 3
    show_failures: int = 5

    @property
    def enabled(self) -> bool:
        return bool(self.models)

    def describe(self) -> str:
        where = self.base_url or "the OpenAI API"
        names = ", ".join(f"{m.name} (w={m.weight:g}, ${_price(m)})" for m in self.models)
        cap = "no cost cap" if self.max_cost is None else f"cost cap ${self.max_cost:g}"
        parallel = "auto" if self.concurrency is None else self.concurrency
        return f"LLM: {names} via {where}; {cap}; proposals in parallel: {parallel}"


def _price(m: ModelSpec) -> str:
    if m.price_in is None and m.price_out is None:
        return "price unknown"
    return f"{m.price_in or 0:g}/{m.price_out or 0:g} per 1M tokens"


_INT_KEYS = {
    "max_retries": 0,
    "resamples": 0,
    "concurrency": 1,
    "failures_before_cooldown": 1,
    "lineage_depth": 0,
    "log_tail_lines": 0,
    "show_elites": 0,
    "show_failures": 0,
    "max_tokens": 1,
}
_FLOAT_KEYS = {"timeout": 1e-9, "cooldown": 0.0, "max_cost": 0.0}
_STR_KEYS = ("base_url", "api_key_env", "program")
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSpec)}


def parse_llm(table: dict[str, Any]) -> LLMSettings:
    """Turn the `[llm]` table into settings; anything unknown or out of range is a UserError."""
    table = dict(table or {})
    if "api_key" in table:
        raise UserError(
            "the [llm] table holds an API key",
            "the run's config is copied into its archive, where a key must not go",
            "put the key in OPENAI_API_KEY (or name another variable with api_key_env)",
        )
    known = {f.name for f in dataclasses.fields(LLMSettings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UserError(
            f"unknown [llm] key(s): {', '.join(unknown)}",
            "",
            f"known keys: {', '.join(sorted(known))}",
        )
    values: dict[str, Any] = {}
    for key, low in _INT_KEYS.items():
        if table.get(key) is not None:
            values[key] = _int(key, table[key], low)
    for key, low in _FLOAT_KEYS.items():
        if table.get(key) is not None:
            values[key] = _number(key, table[key], low)
    for key in _STR_KEYS:
        if table.get(key) is not None:
            values[key] = _text(key, table[key])
    if table.get("fallback") is not None:
        if not isinstance(table["fallback"], bool):
            raise UserError(
                f"llm fallback is {table['fallback']!r}",
                "it is true or false",
                "set fallback = true (or pass --llm-fallback)",
            )
        values["fallback"] = table["fallback"]
    for key in ("rewrite_share", "aim_share"):
        if table.get(key) is not None:
            share = _number(key, table[key], 0.0)
            if share > 1:
                raise UserError(
                    f"llm {key} is {share}", "it is a share of proposals", "use a value in [0, 1]"
                )
            values[key] = share
    models = tuple(_model(m) for m in _as_list(table.get("models")))
    if len({m.name for m in models}) != len(models):
        raise UserError("a model is listed twice in [llm] models", "", "list each model once")
    if models and not any(m.weight > 0 for m in models):
        raise UserError("no LLM model has a positive weight", "", "give one model weight > 0")
    settings = LLMSettings(models=models, **values)
    if settings.max_cost is not None:
        unpriced = [m.name for m in models if m.price_in is None or m.price_out is None]
        if unpriced:
            raise UserError(
                f"max_llm_cost is set but {', '.join(unpriced)} has no price",
                "without prices the spend cannot be counted",
                "set price_in and price_out (USD per 1M tokens) in [[llm.models]]",
            )
    return settings


def fold_flags(table: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Merge --llm-* flags into the [llm] table; flag models keep the file's settings for them."""
    table = dict(table or {})
    for flag, key in FLAG_KEYS.items():
        value = flags.pop(flag, None)
        if value is None or value == ():
            continue
        if key == "models":
            from_file = {_model_name(m): m for m in _as_list(table.get("models"))}
            value = [from_file.get(name, name) for name in value]
        table[key] = value
    return table


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UserError(
        f"llm models is {value!r}",
        "expected a model name or a list of models",
        'use models = ["gpt-4.1-mini"] or [[llm.models]] tables',
    )


def _model_name(entry: Any) -> Any:
    return entry.get("name") if isinstance(entry, dict) else entry


def _model(entry: Any) -> ModelSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise UserError(
            f"bad LLM model entry {entry!r}",
            "each model needs a name",
            'use name = "model-id" in [[llm.models]]',
        )
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise UserError(
            f"unknown key(s) {', '.join(unknown)} for LLM model {entry['name']!r}",
            "",
            f"known keys: {', '.join(sorted(_MODEL_KEYS))}",
        )
    spec = dict(entry)
    known_in, known_out = KNOWN_PRICES.get(spec["name"], (None, None))
    spec.setdefault("price_in", known_in)
    spec.setdefault("price_out", known_out)
    for key in ("weight", "temperature", "price_in", "price_out"):
        if spec.get(key) is not None:
            spec[key] = _number(f"{entry['name']}.{key}", spec[key], 0.0)
    for key in ("base_url", "api_key_env"):
        if spec.get(key) is not None:
            spec[key] = _text(f"{entry['name']}.{key}", spec[key])
    return ModelSpec(**spec)


def _int(key: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(
            f"llm {key} is {value!r}",
            f"it must be a whole number >= {low}",
            f"fix {key} in the [llm] table",
        )
    return value


def _number(key: str, value: Any, low: float) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < low
    ):
        raise UserError(
            f"llm {key} is {value!r}",
            f"it must be a number >= {low:g}",
            f"fix {key} (or its flag, e.g. --max-llm-cost)",
        )
    return float(value)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"llm {key} is {value!r}", "it must be a non-empty string", f"fix {key}")
    return value
