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
    reply = "IDEA: smaller lr, bigger batch\n" + block("LR = 3e-3", "LR = 1e-3") + block(
        "BATCH = 16", "BATCH = 32")
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
