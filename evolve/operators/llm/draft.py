"""The first turn of an LLM conversation, built one way for the operators and `evolve prompt`.

`evolve prompt` prints what the operator would send now, so that a person can
iterate on program.md; that promise holds only if both build the messages with
the same code, which is this function. The operator makes its random choices
(rewrite or edits, aimed or not) and passes them in; the command takes them as
flags.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

from evolve.operators.base import Parent
from evolve.operators.llm import aim
from evolve.operators.llm.context import RunContext
from evolve.operators.llm.prompt import crossover_messages, load_program, mutation_messages
from evolve.operators.llm.settings import LLMSettings


class RunView(Protocol):
    """What an LLM operator needs from the run (the engine's Proposer provides it)."""

    def context(self, parents: list[Parent], **limits: int) -> RunContext: ...

    def is_known(self, source: str) -> bool: ...


@dataclass
class Draft:
    """The messages to send, and the choices they were built with."""

    messages: list[dict[str, str]]
    rewrite: bool
    target: aim.Target | None = None

    def meta(self) -> dict[str, Any]:
        return {} if self.target is None else {"target": self.target.to_dict()}


def compose(
    settings: LLMSettings,
    view: RunView | None,
    parents: list[Parent],
    *,
    rewrite: bool,
    aim_rng: random.Random | None = None,
) -> Draft:
    """The first turn for one parent (mutation) or two (crossover).

    With `aim_rng`, a mutation names a target niche drawn with it (when the parent has an
    empty or weakly held neighbour; otherwise the prompt is a plain one). Raises UserError
    when program.md cannot be read.
    """
    context = RunContext()
    if view is not None:
        context = view.context(
            parents,
            depth=settings.lineage_depth,
            log_lines=settings.log_tail_lines,
            n_elites=settings.show_elites,
            n_failures=settings.show_failures,
        )
    program = load_program(settings.program)  # re-read each time: a person may be editing it
    if len(parents) == 2:
        return Draft(crossover_messages(program, parents[0], parents[1], context, rewrite), rewrite)
    parent, target = parents[0], None
    if aim_rng is not None and context.grid is not None:
        niche = aim.pick(context.niches.get(parent.id) or [], aim_rng)
        if niche is not None:
            target = aim.target(context.grid, parent, niche)
    return Draft(mutation_messages(program, parent, context, rewrite, target), rewrite, target)
