"""From a run config to LLM operators: the shared `LLM` handle, operator options, notes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evolve.errors import UserError
from evolve.operators.llm.client import LLM
from evolve.operators.llm.prompt import load_program
from evolve.operators.llm.settings import parse_llm
from evolve.operators.llm.summary import STATS_FILE  # totals of calls, failures, tokens, cost

LLM_OPERATOR_NAMES = ("llm_mutate", "llm_crossover")


def build_llm(
    table: Mapping[str, Any],
    weights: Mapping[str, float] | None,
    options: Mapping[str, Mapping[str, Any]],
    run_dir: Path,
) -> tuple[LLM | None, dict[str, dict[str, Any]], list[str]]:
    """The LLM handle (None without models), operator options that carry it, and notes to print."""
    settings = parse_llm(dict(table))
    weights = dict(weights or {})
    options = {name: dict(value) for name, value in options.items()}
    used = [name for name in LLM_OPERATOR_NAMES if weights.get(name, 0) > 0]
    if not settings.enabled:
        if used:
            raise UserError(
                f"the operators {', '.join(used)} need an LLM, and none is configured",
                "",
                "pass --llm-model NAME (and --llm-base-url URL for a local server)",
            )
        mix = ", ".join(f"{n} {w:g}" for n, w in weights.items()) or "the defaults"
        return (
            None,
            options,
            [
                f"no LLM configured: built-in operators only ({mix}); "
                "pass --llm-model to add LLM mutation and crossover"
            ],
        )
    load_program(
        settings.program
    )  # a missing program.md is a start-up error, not a run of failures
    builtin = [n for n, w in weights.items() if w > 0 and n not in LLM_OPERATOR_NAMES]
    if settings.fallback and not builtin:
        raise UserError(
            "--llm-fallback asks to go on without the LLM, but only LLM operators have a weight",
            "without the LLM no child could be made",
            "give hyper_mutate a weight in [operators], or drop --llm-fallback",
        )
    llm = LLM(settings, stats_path=run_dir / STATS_FILE)
    llm.builtin = bool(builtin)
    for name in used:
        options.setdefault(name, {})["llm"] = llm
    mix = ", ".join(f"{n} {w:g}" for n, w in weights.items())
    notes = [f"{settings.describe()}; operators: {mix}; instructions: {settings.program}"]
    if not used:
        notes.append("note: an LLM is configured but no LLM operator has a weight, so it is unused")
    if llm.stopped:
        notes.append(f"note: {llm.stopped}")
    return llm, options, notes
