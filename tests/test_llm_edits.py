"""Reading LLM replies: SEARCH/REPLACE blocks, whitespace-tolerant matching, full rewrites, ideas."""

from __future__ import annotations

import pytest

from evolve.operators.llm.edits import EditError, apply_reply, idea_of, parse_blocks

PROGRAM = """\
LR = 3e-3
BATCH = 16


def step(model, x):
    loss = model(x)
    if loss > 10:
        loss = loss * 0.5
    return loss
"""


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_exact_blocks_apply_in_order_and_keep_everything_else() -> None:
    reply = (
        "IDEA: smaller lr, bigger batch\n"
        + block("LR = 3e-3", "LR = 1e-3")
        + block("BATCH = 16", "BATCH = 32")
    )
    source, how = apply_reply(reply, PROGRAM)
    assert how == "diff"
    assert source == PROGRAM.replace("3e-3", "1e-3").replace("16", "32")


def test_trailing_spaces_and_shifted_indentation_still_match_and_are_reindented() -> None:
    # The LLM quoted the body without its indentation and with trailing blanks.
    reply = block("if loss > 10:   \n    loss = loss * 0.5", "if loss > 5:\n    loss = loss * 0.25")
    source, _ = apply_reply(reply, PROGRAM)
    assert "    if loss > 5:\n        loss = loss * 0.25\n    return loss" in source
    # ... and with too much indentation, the replacement loses the same amount.
    deeper = block("        if loss > 10:\n            loss = loss * 0.5", "        pass")
    assert "    pass\n    return loss" in apply_reply(deeper, PROGRAM)[0]


def test_a_block_that_does_not_match_rejects_the_whole_reply() -> None:
    reply = block("LR = 3e-3", "LR = 1e-3") + block("DROPOUT = 0.1", "DROPOUT = 0.0")
    with pytest.raises(EditError) as info:
        apply_reply(reply, PROGRAM)
    assert info.value.kind == "no_match"
    assert "block 2" in str(info.value) and "DROPOUT = 0.1" in str(info.value)


def test_ambiguous_and_empty_search_are_errors_not_guesses() -> None:
    with pytest.raises(EditError, match="2 times"):
        apply_reply(block("BATCH = 16", "BATCH = 8"), PROGRAM + "BATCH = 16\n")
    with pytest.raises(EditError, match="empty"):
        apply_reply(block("", "import os"), PROGRAM)


def test_unclosed_block_is_malformed() -> None:
    with pytest.raises(EditError) as info:
        parse_blocks("<<<<<<< SEARCH\nLR = 3e-3\n=======\nLR = 1e-3\n")
    assert info.value.kind == "malformed"


def test_fenced_program_is_a_rewrite_and_prose_is_no_code() -> None:
    reply = "IDEA: rewrite\nHere it is:\n```python\nLR = 1\nprint(LR)\n```\nand a note"
    assert apply_reply(reply, PROGRAM) == ("LR = 1\nprint(LR)\n", "rewrite")
    with pytest.raises(EditError) as info:
        apply_reply("I would lower the learning rate, it should help.", PROGRAM)
    assert info.value.kind == "no_code"


def test_idea_comes_from_the_idea_line_else_the_first_prose_line() -> None:
    assert idea_of("**IDEA:** use RMSNorm  \nblah") == "use RMSNorm"
    assert idea_of("```python\nx\n```\n") == "x"
    assert idea_of("# Lower the LR\n" + block("a", "b")) == "Lower the LR"
    assert idea_of("", "LLM edit") == "LLM edit"


def test_search_matches_whole_lines_only() -> None:
    """`BATCH = 1` is not a part of `BATCH = 16`; `LR = 3e-3` is not a part of `MIN_LR = 3e-3`."""
    with pytest.raises(EditError, match="not in the program"):
        apply_reply(block("BATCH = 1", "BATCH = 8"), PROGRAM)
    source, _ = apply_reply(block("LR = 3e-3", "LR = 1e-3"), "MIN_LR = 3e-3\n" + PROGRAM)
    assert source == "MIN_LR = 3e-3\n" + PROGRAM.replace("LR = 3e-3", "LR = 1e-3")


ALIGNED = """\
LEARNING_RATE = 3e-3     # peak learning rate
WEIGHT_DECAY  = 0.1      # AdamW
WARMUP_FRAC   = 0.05


def lr_at(step, total):
    if step < WARMUP_FRAC * total:
        return LEARNING_RATE * step / (WARMUP_FRAC * total)
    return LEARNING_RATE
"""


def test_collapsed_alignment_spaces_inside_a_line_still_match() -> None:
    """The LLM quoted `LEARNING_RATE = 3e-3 # peak…` for `LEARNING_RATE = 3e-3     # peak…`."""
    reply = block(
        "LEARNING_RATE = 3e-3 # peak learning rate\nWEIGHT_DECAY = 0.1 # AdamW",
        "LEARNING_RATE = 1e-3 # peak learning rate\nWEIGHT_DECAY = 0.1 # AdamW",
    )
    source, how = apply_reply(reply, ALIGNED)
    assert how == "diff"
    assert source.startswith(
        "LEARNING_RATE = 1e-3 # peak learning rate\nWEIGHT_DECAY = 0.1 # AdamW\n"
        "WARMUP_FRAC   = 0.05\n"
    )
    # indentation is still shifted as a whole when the inner spacing differs too
    inner = block("if step  <  WARMUP_FRAC * total:", "if step <= WARMUP_FRAC * total:")
    assert "    if step <= WARMUP_FRAC * total:\n        return" in apply_reply(inner, ALIGNED)[0]


def test_a_loose_match_in_two_places_is_refused_not_guessed() -> None:
    program = "A  = 1\nB = 2\nA   = 1\n"
    with pytest.raises(EditError, match="matches 2 places") as info:
        apply_reply(block("A = 1", "A = 5"), program)
    assert info.value.kind == "no_match"
    # an exact quote is not ambiguous because another line matches only loosely
    assert apply_reply(block("A  = 1", "A = 5"), program)[0] == "A = 5\nB = 2\nA   = 1\n"


UDIFF = """\
IDEA: lower the peak learning rate and warm up for longer
```diff
--- a/train.py
+++ b/train.py
@@ -1,3 +1,3 @@
-LEARNING_RATE = 3e-3     # peak learning rate
+LEARNING_RATE = 1e-3     # peak learning rate
 WEIGHT_DECAY  = 0.1      # AdamW
-WARMUP_FRAC   = 0.05
+WARMUP_FRAC   = 0.1

@@ -40,5 +40,5 @@ def lr_at(step, total):
     if step < WARMUP_FRAC * total:
         return LEARNING_RATE * step / (WARMUP_FRAC * total)
-    return LEARNING_RATE
+    return 0.5 * LEARNING_RATE
```
"""


def test_a_unified_diff_is_applied_by_its_context_whatever_its_line_numbers() -> None:
    source, how = apply_reply(UDIFF, ALIGNED)
    assert how == "unified_diff"
    assert source == (
        ALIGNED.replace("3e-3 ", "1e-3 ")
        .replace("0.05", "0.1")
        .replace("    return LEARNING_RATE\n", "    return 0.5 * LEARNING_RATE\n")
    )
    # bare `@@ @@` headers, no file names, no fence, collapsed spaces: still one place each
    bare = "@@ @@\n-WEIGHT_DECAY = 0.1 # AdamW\n+WEIGHT_DECAY = 0.2 # AdamW\n"
    assert "WEIGHT_DECAY = 0.2 # AdamW\nWARMUP_FRAC" in apply_reply(bare, ALIGNED)[0]


def test_a_unified_hunk_that_is_ambiguous_or_absent_is_refused() -> None:
    twice = "@@ -1 +1 @@\n-A = 1\n+A = 2\n"
    with pytest.raises(EditError, match="2 times") as info:
        apply_reply(twice, "A = 1\nB = 2\nA = 1\n")
    assert info.value.kind == "no_match"
    with pytest.raises(EditError, match="not in the program"):
        apply_reply("@@ -1 +1 @@\n-DROPOUT = 0.1\n+DROPOUT = 0.0\n", ALIGNED)
