"""`evolve prompt`: the messages the LLM operator would send now, and optionally one call.

A person iterating on program.md wants to read the prompt before paying for a
run of it. The messages come from `compose`, the operator's own code, over the
run opened read-only; `send` makes one call with the run's LLM settings and
shows what the reply would make of the parent, storing nothing (no record, no
llm.json: the call is not counted against the run's cost cap).
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from dataclasses import dataclass

from evolve.archive import RunArchive
from evolve.archive.elites import best_elite
from evolve.browse.locate import resolve
from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.operators.base import Parent, VariationError
from evolve.operators.llm.client import LLM, Reply
from evolve.operators.llm.draft import Draft, compose
from evolve.operators.llm.operators import LLMCrossover, LLMMutation
from evolve.operators.llm.settings import LLMSettings, fold_flags, parse_llm
from evolve.operators.llm.view import ArchiveView, genome_parent


@dataclass
class Preview:
    parents: list[Parent]
    settings: LLMSettings
    draft: Draft
    notes: list[str]


@dataclass
class Sent:
    reply: Reply
    diff: str  # parent -> child, empty when the reply gave no usable program
    error: str  # why the reply is unusable ("" when it is)


def run_settings(
    archive: RunArchive, models: tuple[str, ...] = (), base_url: str | None = None
) -> LLMSettings:
    """The run's stored [llm] table, with --llm-model / --llm-base-url on top."""
    stored = RunConfig.from_dict(dict(archive.config.get("config") or {})).llm
    flags = {"llm_models": models, "llm_base_url": base_url}
    return parse_llm(fold_flags(stored, flags))


def preview(
    archive: RunArchive,
    settings: LLMSettings,
    ident: str | None = None,
    other: str | None = None,
    *,
    rewrite: bool = False,
    aim: bool = False,
    seed: int = 0,
) -> Preview:
    """The first turn for parent `ident` (default: the best elite), crossed with `other` if
    given; `aim` names a target niche drawn with `seed`, as an aimed mutation would."""
    first = _genome(archive, ident)
    parents = [genome_parent(archive, first)]
    if other is not None:
        parents.append(genome_parent(archive, _genome(archive, other)))
    if other is not None and aim:
        raise UserError(
            "--aim is for mutations", "a crossover is never aimed", "drop --aim, or drop --with"
        )
    draft = compose(
        settings,
        ArchiveView(archive),
        parents,
        rewrite=rewrite,
        aim_rng=random.Random(seed) if aim else None,
    )
    notes = [f"parent {p.id[:12]}, cell {list(p.cell) if p.cell else '-'}" for p in parents]
    if draft.target is not None:
        notes.append(f"aimed at niche {list(draft.target.cell)}")
    elif aim:
        notes.append("no empty or weakly held neighbour cell: the prompt is a plain mutation")
    return Preview(parents, settings, draft, notes)


def send(archive: RunArchive, view: Preview, seed: int = 0) -> Sent:
    """One call with the previewed messages; the reply checked by the operator's own rules
    (edits apply, the code parses, keeps the harness contract, is new to the run), nothing
    stored."""
    if not view.settings.enabled:
        raise UserError(
            "the run has no LLM model configured",
            "--send needs a model to call",
            "pass --llm-model NAME (and --llm-base-url URL for a local server)",
        )
    llm = LLM(dataclasses.replace(view.settings, failures_before_cooldown=10**9))
    operator = (LLMCrossover if len(view.parents) == 2 else LLMMutation)(llm=llm)
    operator.attach(ArchiveView(archive))
    try:
        reply = llm.complete(view.draft.messages, llm.pick(random.Random(seed)))
    except VariationError as exc:
        raise UserError(
            "the LLM call failed", str(exc), "check --llm-base-url, the model name and the API key"
        ) from None
    parent = view.parents[0]
    try:
        source, _ = operator._program(reply.text, parent)
    except VariationError as exc:
        return Sent(reply, "", str(exc))
    diff = "".join(
        difflib.unified_diff(
            parent.source.splitlines(keepends=True),
            source.splitlines(keepends=True),
            fromfile=f"parent {parent.id[:12]}",
            tofile="child",
        )
    )
    return Sent(reply, diff, "")


def _genome(archive: RunArchive, ident: str | None) -> str:
    if ident is not None:
        return resolve(archive, ident).genome
    best = best_elite(archive.elites(), archive.rule.confirm_n)
    if best is None:
        raise UserError(
            f"run {archive.name} has no elite yet",
            "the prompt needs a parent",
            "give a genome id, or wait for the first evaluations",
        )
    return best.genome
