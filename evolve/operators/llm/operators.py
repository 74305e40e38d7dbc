"""LLM mutation and crossover: ask, check the answer, and say what was wrong until it is usable.

A reply that cannot become a new program (SEARCH text not found, no code, a
syntax error, a broken harness contract, a program already tried) is not
dropped: the error goes back to the same model as the next turn of the
conversation, up to `resamples` times. The child keeps the whole conversation
(prompt) and the reply it came from (response).
"""

from __future__ import annotations

import ast
import random
from typing import Any

from evolve.errors import UserError
from evolve.operators.base import Child, Parent, VariationError, require_parents
from evolve.operators.dedupe import GenomeSyntaxError, check_syntax, normalized_hash, parse
from evolve.operators.llm.client import LLM, Reply
from evolve.operators.llm.draft import Draft, RunView, compose
from evolve.operators.llm.edits import EditError, apply_reply, idea_of
from evolve.operators.llm.prompt import feedback, render

CONTRACT = (
    "the program must keep using the harness: `run = session()`, training on "
    "`run.batches(...)` while `run.time_left() > 0`, and ending with "
    "`run.submit(model, seq_len=T, steps=n)`"
)


def _uses_harness(source: str) -> bool:
    """Calls `session(...)` and `.submit(...)` in code (mentions in comments do not count)."""
    called = set()
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return {"session", "submit"} <= called


class _LLMOperator:
    """The conversation both LLM operators share; subclasses only write the first prompt."""

    arity = 1

    def __init__(
        self,
        name: str,
        llm: LLM | None = None,
        resamples: int | None = None,
        rewrite_share: float | None = None,
        aim_share: float | None = None,
    ) -> None:
        if llm is None:
            raise ValueError(f"{name} needs an LLM: pass --llm-model, or set models in [llm]")
        settings = llm.settings
        self.name, self.llm = name, llm
        self.resamples = settings.resamples if resamples is None else resamples
        self.rewrite_share = settings.rewrite_share if rewrite_share is None else rewrite_share
        # only mutations are aimed: a crossover's child has two parents' cells to come from
        share = settings.aim_share if aim_share is None else aim_share
        self.aim_share = share if self.arity == 1 else 0.0
        if self.resamples < 0 or not 0 <= self.rewrite_share <= 1 or not 0 <= self.aim_share <= 1:
            raise ValueError("resamples must be >= 0, rewrite_share and aim_share in [0, 1]")
        self.view: RunView | None = None

    def attach(self, view: RunView) -> None:
        """Called by the proposer: where the run's history and the dedupe set come from."""
        self.view = view

    def available(self) -> bool:
        """False while the LLM is capped or paused; the proposer then picks another operator."""
        return self.llm.available()

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        require_parents(self, parents)
        rewrite = rng.random() < self.rewrite_share
        model = self.llm.pick(rng)
        aimed = self.aim_share > 0 and rng.random() < self.aim_share
        try:
            draft = self.draft(parents, rewrite=rewrite, aim_rng=rng if aimed else None)
        except UserError as exc:  # program.md went missing while the run goes on
            raise VariationError(exc.what) from None
        messages = list(draft.messages)
        problems: list[str] = []
        last: VariationError | None = None
        for turn in range(self.resamples + 1):
            reply = self.llm.complete(messages, model)
            try:
                source, how = self._program(reply.text, parents[0])
            except VariationError as exc:
                kind = getattr(
                    exc, "kind", "syntax" if isinstance(exc, GenomeSyntaxError) else "other"
                )
                self.llm.reject(kind)
                problems.append(kind)
                messages += [
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": feedback(str(exc), rewrite)},
                ]
                last = exc
                continue
            return self._child(source, how, parents, messages, reply, turn, problems, draft)
        raise VariationError(
            f"{self.name}: no usable reply in {self.resamples + 1} turn(s) "
            f"({', '.join(problems)}); last: {last}"
        )

    def draft(
        self, parents: list[Parent], *, rewrite: bool, aim_rng: random.Random | None = None
    ) -> Draft:
        """The first turn, built by the same code `evolve prompt` prints it with."""
        return compose(self.llm.settings, self.view, parents, rewrite=rewrite, aim_rng=aim_rng)

    def _program(self, text: str, parent: Parent) -> tuple[str, str]:
        """The new program, or an error that explains to the LLM what to fix."""
        source, how = apply_reply(text, parent.source)
        check_syntax(source)
        if not _uses_harness(source):
            raise EditError("contract", CONTRACT)
        if normalized_hash(source) == normalized_hash(parent.source):
            raise EditError(
                "unchanged",
                "the edit changes no code (comments and formatting do "
                "not count); make a real change",
            )
        if self.view is not None and self.view.is_known(source):
            raise EditError(
                "duplicate",
                "that program was already tried in this run; propose a different change",
            )
        return source, how

    def _child(
        self,
        source: str,
        how: str,
        parents: list[Parent],
        messages: list[dict[str, str]],
        reply: Reply,
        turn: int,
        problems: list[str],
        draft: Draft,
    ) -> Child:
        meta: dict[str, Any] = {
            "prompt": render(messages),
            "response": reply.text,
            "model": reply.model,
            "format": how,
            "turns": turn + 1,
            "rejected": problems,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cost": reply.cost,
            "seconds": round(reply.seconds, 3),
            **draft.meta(),
        }
        fallback = "LLM rewrite" if how == "rewrite" else "LLM edit"
        return Child(
            source, self.name, [p.id for p in parents], idea_of(reply.text, fallback), meta
        )


class LLMMutation(_LLMOperator):
    """The LLM edits one parent (SEARCH/REPLACE blocks, or a full rewrite for `rewrite_share`)."""

    arity = 1

    def __init__(self, name: str = "llm_mutate", **options: Any) -> None:
        super().__init__(name, **options)


class LLMCrossover(_LLMOperator):
    """The LLM writes a child of the first parent that takes over ideas of the second."""

    arity = 2

    def __init__(self, name: str = "llm_crossover", **options: Any) -> None:
        super().__init__(name, **options)
