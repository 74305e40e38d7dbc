"""Hyperparameter operators, dedupe hashing and the operator mix, on a realistic genome."""

from __future__ import annotations

import ast
import random
from collections import Counter

import pytest

from evolve.errors import UserError
from evolve.operators import (
    Child,
    GenomeSyntaxError,
    HyperparamCrossover,
    HyperparamMutation,
    OperatorMix,
    Parent,
    VariationError,
    check_syntax,
    find_constants,
    make_operator,
    normalized_hash,
    register_operator,
    unregister_operator,
)
from evolve.operators.hyperparams import replace_spans
from evolve.testkit.grids import small_grid

GENOME = '''"""Tiny GPT on bytes: an autoresearch-style baseline."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.harness import session

# ---- hyperparameters (the search edits these) ----
DEPTH = 4  # transformer blocks
N_EMBD = 128  # residual width
N_HEAD = 4  # attention heads
SEQ_LEN: int = 256  # context length
LEARNING_RATE = 3e-3  # peak AdamW learning rate
WEIGHT_DECAY = 0.1  # decoupled weight decay
BATCH_SIZE = 32  # sequences per step
WARMUP_STEPS = 100   # linear warmup, then cosine decay
DROPOUT = 0.0  # off: short runs do not overfit
USE_ROTARY = True  # rotary position embeddings
BETAS = (0.9, 0.95)  # AdamW betas
MAX_STEPS = 2 ** 12  # upper bound; the clock usually stops us first
GRAD_CLIP = 1.0
tag = "baseline"  # lowercase: not a hyperparameter


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        HIDDEN = 4 * N_EMBD  # inside a function: not a genome constant
        self.ln = nn.LayerNorm(N_EMBD)
        self.mlp = nn.Sequential(nn.Linear(N_EMBD, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, N_EMBD))

    def forward(self, x):
        return x + self.mlp(self.ln(x))


def main() -> None:
    run = session()
    model = nn.Sequential(*[Block() for _ in range(DEPTH)]).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=BETAS)
    for step, (x, y) in enumerate(run.batches(BATCH_SIZE, SEQ_LEN)):
        lr_scale = min(1.0, (step + 1) / WARMUP_STEPS)
        if run.time_left() <= 0 or step >= MAX_STEPS:
            break
        run.log(step=step, lr=LEARNING_RATE * lr_scale * math.cos(0.0))
    run.submit(model, seq_len=SEQ_LEN, steps=step)


if __name__ == "__main__":
    main()
'''

POWERS_OF_TWO = {"DEPTH", "N_EMBD", "N_HEAD", "SEQ_LEN", "BATCH_SIZE"}


def parent(source: str = GENOME, pid: str = "p1") -> Parent:
    return Parent(id=pid, source=source, mean=1.5, std=0.01, n=1)


def mutate(seed: int, source: str = GENOME, **kw) -> Child:
    return HyperparamMutation(**kw).vary([parent(source)], random.Random(seed))


def values(source: str) -> dict:
    return {name: c.value for name, c in find_constants(source).items()}


# ---------------------------------------------------------------- find_constants


def test_find_constants_reads_the_header_only() -> None:
    found = values(GENOME)
    assert found == {
        "DEPTH": 4,
        "N_EMBD": 128,
        "N_HEAD": 4,
        "SEQ_LEN": 256,
        "LEARNING_RATE": 3e-3,
        "WEIGHT_DECAY": 0.1,
        "BATCH_SIZE": 32,
        "WARMUP_STEPS": 100,
        "DROPOUT": 0.0,
        "USE_ROTARY": True,
        "BETAS": (0.9, 0.95),
        "MAX_STEPS": 4096,
        "GRAD_CLIP": 1.0,
    }
    assert type(found["MAX_STEPS"]) is int and type(found["USE_ROTARY"]) is bool
    assert find_constants(GENOME)["LEARNING_RATE"].text == "3e-3"


def test_find_constants_handles_signs_lists_and_skips_non_literals() -> None:
    src = "A = -3\nB = -2.5e-1\nC = [1, -2, 0.5]\nD = 10_000\nE = 'text'\nF = None\nG = A * 2\nH = 1e999\nI = (-8) ** 0.5\n"
    assert values(src) == {"A": -3, "B": -0.25, "C": [1, -2, 0.5], "D": 10_000}


def test_an_integer_past_the_float_range_is_no_hyperparameter() -> None:
    """An LLM may write `N = 10**64 * 10**64 * ...`; mutating it used to raise OverflowError,
    which no operator contract covers (the engine only expects VariationError)."""
    huge = " * ".join(["10**64"] * 6)
    src = f"N_EMBD = 64\nHUGE = {huge}\nLR = 3e-3\n"
    assert set(values(src)) == {"N_EMBD", "LR"}
    mutation = make_operator("hyper_mutate", rate=1.0)
    for seed in range(20):
        child = mutation.vary([Parent(id="p", source=src)], random.Random(seed))
        assert f"HUGE = {huge}" in child.source


# ---------------------------------------------------------------- mutation


def restore(child_source: str, parent_source: str) -> str:
    """Put the parent's literal text back into every changed constant of the child."""
    before, after = find_constants(parent_source), find_constants(child_source)
    edits = [(after[n].node, before[n].text) for n in after if after[n].text != before[n].text]
    return replace_spans(child_source, edits)


@pytest.mark.parametrize("seed", range(80))
def test_mutation_changes_only_literals_and_reports_them(seed: int) -> None:
    child = mutate(seed, rate=0.3)
    ast.parse(child.source)
    # Undoing the literal edits gives back the parent byte for byte: comments,
    # spacing and code outside the changed literals are untouched.
    assert restore(child.source, GENOME) == GENOME
    before, after = find_constants(GENOME), find_constants(child.source)
    changed = {n for n in after if after[n].value != before[n].value}
    assert changed and changed == set(child.meta["changes"])
    assert child.operator == "hyper_mutate" and child.parent_ids == ["p1"]
    for name in changed:
        assert f"{name} {before[name].text} -> {after[name].text}" in child.idea
        old, new = before[name].value, after[name].value
        assert type(new) is type(old)
        if name in POWERS_OF_TWO:
            assert new in (old * 2, old // 2)
        elif name == "USE_ROTARY":
            assert new is (not old)
        elif name == "BETAS":
            assert all(0 < b < 1 for b in new) and new != old
        elif isinstance(old, float):
            assert new > 0
    assert after["DROPOUT"].text == "0.0"  # zero has no scale to perturb


def lr_text(source: str) -> str:
    return find_constants(source)["LEARNING_RATE"].text


def test_mutation_keeps_exponent_style_and_few_digits() -> None:
    seen = set()
    for seed in range(200):
        text = lr_text(mutate(seed, "LEARNING_RATE = 3e-3  # peak\n").source)
        mantissa, _, exponent = text.partition("e")
        assert exponent and len(mantissa.replace(".", "")) <= 3, text
        seen.add(text)
    assert len(seen) > 20


def test_mutation_keeps_power_expression_form() -> None:
    texts = {find_constants(mutate(s, rate=1.0).source)["MAX_STEPS"].text for s in range(20)}
    assert texts == {"2 ** 11", "2 ** 13"}


def test_small_ints_move_but_never_below_one() -> None:
    results = Counter(
        values(mutate(seed, "N_LAYER = 3  # blocks\n").source)["N_LAYER"] for seed in range(300)
    )
    assert 3 not in results and min(results) >= 1 and len(results) >= 2
    for seed in range(50):
        assert values(mutate(seed, "N = -3\n").source)["N"] < 0
        assert values(mutate(seed, "N = 1\n").source)["N"] == 2


def test_non_power_int_moves_by_about_scale() -> None:
    new = [
        values(mutate(s, "WARMUP_STEPS = 100  # linear\n").source)["WARMUP_STEPS"]
        for s in range(300)
    ]
    moved = [v for v in new if v != 100]
    assert moved and all(isinstance(v, int) and 40 <= v <= 250 for v in moved)


def test_unicode_before_the_literal_on_the_same_line() -> None:
    src = 'NAME = "héllo wörld"; LR = 3e-4  # ünïcode comment\nBATCH_SIZE = 8\n'
    for seed in range(20):
        child = mutate(seed, src, rate=1.0)
        assert child.source.startswith('NAME = "héllo wörld"; LR = ')
        assert "  # ünïcode comment\nBATCH_SIZE = " in child.source
        assert values(child.source)["BATCH_SIZE"] in (4, 16)


def test_mutation_is_deterministic_given_the_rng() -> None:
    assert mutate(7).source == mutate(7).source
    assert len({mutate(s).source for s in range(30)}) > 20


def test_mutation_without_constants_is_a_variation_error() -> None:
    with pytest.raises(VariationError, match="no mutable UPPER_CASE constants"):
        mutate(0, "import torch\nlr = 3e-4\nDROPOUT = 0.0\n")


# ---------------------------------------------------------------- crossover

OTHER = (
    GENOME.replace("DEPTH = 4", "DEPTH = 6")
    .replace("LEARNING_RATE = 3e-3", "LEARNING_RATE = 1e-3")
    .replace("BATCH_SIZE = 32", "BATCH_SIZE = 64")
    .replace("USE_ROTARY = True", "USE_ROTARY = False")
    .replace("nn.GELU()", "nn.ReLU()")
)


@pytest.mark.parametrize("seed", range(60))
def test_crossover_takes_values_only_from_the_parents(seed: int) -> None:
    child = HyperparamCrossover().vary([parent(), parent(OTHER, "p2")], random.Random(seed))
    assert "nn.GELU()" in child.source and "nn.ReLU()" not in child.source  # code of parent 1
    mine, theirs, got = values(GENOME), values(OTHER), values(child.source)
    assert all(got[n] in (mine[n], theirs[n]) for n in mine)
    from_second = {n for n in mine if got[n] != mine[n]}
    assert from_second and from_second != {n for n in mine if mine[n] != theirs[n]}
    assert child.parent_ids == ["p1", "p2"] and child.idea.startswith("from p2: ")
    for n in from_second:
        assert f"{n} " in child.idea
    assert restore(child.source, GENOME) == GENOME


def test_crossover_of_equal_parents_is_a_variation_error() -> None:
    with pytest.raises(VariationError, match="share no constants"):
        HyperparamCrossover().vary([parent(), parent(GENOME, "p2")], random.Random(0))


def test_crossover_wraps_multiline_literals() -> None:
    first, second = "BETAS = (0.9, 0.95)\n", "BETAS = (\n    0.8,  # low\n    0.99,\n)\n"
    child = HyperparamCrossover().vary([parent(first), parent(second, "p2")], random.Random(0))
    assert values(child.source) == {"BETAS": (0.8, 0.99)}


# ---------------------------------------------------------------- dedupe


def test_hash_ignores_comments_whitespace_and_docstrings() -> None:
    reworded = (
        GENOME.replace("# transformer blocks", "# number of blocks")
        .replace("DEPTH = 4", "DEPTH   =   4")
        .replace(
            '"""Tiny GPT on bytes: an autoresearch-style baseline."""', '"""Another docstring."""'
        )
        .replace(
            "    def forward(self, x):\n",
            '    def forward(self, x):\n        """Residual MLP."""\n\n',
        )
        + "\n\n# trailing comment\n"
    )
    assert reworded != GENOME
    assert normalized_hash(reworded) == normalized_hash(GENOME)


def test_hash_changes_with_any_constant_or_code() -> None:
    base = normalized_hash(GENOME)
    assert normalized_hash(GENOME.replace("DEPTH = 4", "DEPTH = 5")) != base
    assert normalized_hash(GENOME.replace("nn.GELU()", "nn.ReLU()")) != base
    assert normalized_hash(GENOME.replace('tag = "baseline"', 'tag = "other"')) != base


def test_syntax_error_names_the_line() -> None:
    broken = GENOME.replace("BATCH_SIZE = 32", "BATCH_SIZE = = 32")
    line = GENOME.splitlines().index("BATCH_SIZE = 32  # sequences per step") + 1
    for check in (check_syntax, normalized_hash, find_constants):
        with pytest.raises(GenomeSyntaxError) as info:
            check(broken)
        assert isinstance(info.value, VariationError)
        assert info.value.lineno == line and f"line {line}" in str(info.value)
        assert "BATCH_SIZE = = 32" in str(info.value)
    with pytest.raises(GenomeSyntaxError, match="null"):
        check_syntax("X = 1\x00\n")
    assert check_syntax(GENOME) is None


# ---------------------------------------------------------------- operator mix


class AppendComment:
    """A stand-in for a later (e.g. LLM) mutation: it registers like one."""

    arity = 1

    def __init__(self, name: str, text: str = "# touched") -> None:
        self.name, self.text = name, text

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        return Child(parents[0].source + self.text + "\n", self.name, [parents[0].id], "comment")


@pytest.fixture
def appended():
    register_operator("append_comment", AppendComment)
    yield "append_comment"
    unregister_operator("append_comment")


def test_mix_respects_cxpb_and_parent_count() -> None:
    mix = OperatorMix({"hyper_mutate": 1.0, "hyper_crossover": 1.0}, cxpb=0.3)
    rng = random.Random(0)
    picks = Counter(mix.choose(5, rng).name for _ in range(5000))
    assert 0.27 < picks["hyper_crossover"] / 5000 < 0.33
    assert {mix.choose(1, rng).name for _ in range(500)} == {"hyper_mutate"}


def test_mix_respects_weights_of_plugged_in_operators(appended: str) -> None:
    mix = OperatorMix(
        {"hyper_mutate": 1.0, appended: 3.0}, cxpb=0.0, options={appended: {"text": "# hi"}}
    )
    rng = random.Random(1)
    picks = Counter(mix.choose(4, rng).name for _ in range(4000))
    assert 0.72 < picks[appended] / 4000 < 0.78
    child = mix.operators[1].vary([parent()], rng)
    assert child.source.endswith("# hi\n")


def test_unknown_or_bad_configuration_is_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        OperatorMix({"hyper_mutate": 1.0, "llm_rewrite": 1.0})
    assert "llm_rewrite" in str(info.value) and "hyper_crossover" in str(info.value)
    with pytest.raises(UserError, match="bad options"):
        make_operator("hyper_mutate", rate=2.0)
    with pytest.raises(UserError, match="bad options"):
        make_operator("hyper_mutate", ratee=0.1)
    with pytest.raises(UserError, match="no mutation operator"):
        OperatorMix({"hyper_crossover": 1.0})
    with pytest.raises(UserError, match="cxpb"):
        OperatorMix(cxpb=1.5)
    with pytest.raises(UserError, match="weight"):
        OperatorMix({"hyper_mutate": -1})


def test_register_refuses_silent_overwrite() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_operator("hyper_mutate", HyperparamMutation)


def test_the_proposer_rejects_builtin_children_that_only_reformat_a_known_genome(
    tmp_path,
) -> None:
    """With one bool to flip, hyper_mutate can make one new program; after it, only duplicates."""
    import threading

    from evolve.archive import RunArchive
    from evolve.engine.proposer import Proposer
    from evolve.record import EvalResult
    from evolve.selection import CuriosityTracker

    seed_source = '"""One switch."""\nimport torch\n\nUSE_X = True  # on\n'
    reworded_flip = '"""Reworded."""\nimport torch\n\n# off now\nUSE_X = (False)\n'
    for known in ([], [reworded_flip]):
        with RunArchive.create(tmp_path / f"run{len(known)}", {}, grid=small_grid()) as archive:
            result = EvalResult("ok", val_bpb=2.0, params=10**5)
            seed = archive.add_evaluation(result, seed_source, generation=0, operator="seed")
            for source in known:
                archive.add_evaluation(
                    result, source, generation=1, operator="hyper_mutate", parents=[seed.genome]
                )
            mix = OperatorMix({"hyper_mutate": 1}, cxpb=0.0)
            proposer = Proposer(
                archive, mix, "uniform", [seed.genome], threading.RLock(), CuriosityTracker()
            )
            rng = random.Random(0)
            if not known:
                child = proposer.child(rng)
                assert "USE_X = False" in child.source
                assert proposer.is_known(reworded_flip)
            with pytest.raises(VariationError, match="duplicate of a known genome"):
                proposer.child(rng)
