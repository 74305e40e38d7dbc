"""Turn an LLM reply into a new program: SEARCH/REPLACE blocks, a unified diff, or a whole
fenced program.

Near misses are used, not bounced (each bounce costs a resample): a SEARCH text
matches verbatim, else as whole lines whose indentation is shifted uniformly, else
as whole lines whose runs of spaces inside a line differ (LLMs collapse alignment
padding). A unified diff's hunks are applied the same way, by their context. But
nothing is guessed or dropped silently: a block found in no place, or in more than
one place at the first level that finds it, makes the whole reply an `EditError`
that goes back to the LLM.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from evolve.operators.base import VariationError
from evolve.operators.llm.udiff import parse_hunks

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)
_IDEA = re.compile(r"^\s*(?:\*\*)?IDEA(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.+?)\s*$", re.M | re.I)


class EditError(VariationError):
    """The reply cannot be turned into a program; `kind` names why, for the statistics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Block:
    search: str
    replace: str


def idea_of(reply: str, fallback: str = "LLM edit") -> str:
    """The reply's `IDEA:` line, else its first line of prose, cut to fit a table row."""
    match = _IDEA.search(reply)
    if match:
        return match.group(1)[:200]
    for line in reply.splitlines():
        line = line.strip().strip("#*").strip()
        if line and not line.startswith(("```", "<<<<<<<", "=======", ">>>>>>>")):
            return line[:200]
    return fallback


def parse_blocks(reply: str) -> list[Block]:
    """Every SEARCH/REPLACE block of the reply, in order; an unfinished block is an error."""
    blocks: list[Block] = []
    state, search, replace = "text", [], []
    for line in reply.splitlines():
        if state == "text" and _SEARCH.match(line):
            state, search, replace = "search", [], []
        elif state == "search" and _DIVIDER.match(line):
            state = "replace"
        elif state == "replace" and _REPLACE.match(line):
            blocks.append(Block("\n".join(search), "\n".join(replace)))
            state = "text"
        elif state == "search":
            search.append(line)
        elif state == "replace":
            replace.append(line)
    if state != "text":
        raise EditError(
            "malformed",
            "a SEARCH/REPLACE block is not closed: each block is "
            "<<<<<<< SEARCH, the old lines, =======, the new lines, >>>>>>> REPLACE",
        )
    return blocks


def full_program(reply: str) -> str | None:
    """The longest fenced code block, if the reply has one (a full rewrite)."""
    codes = [body for lang, body in _FENCE.findall(reply) if lang.lower() in ("", "python", "py")]
    return max(codes, key=len) if codes else None


def apply_reply(reply: str, source: str) -> tuple[str, str]:
    """The program the reply asks for and how it said so ("diff", "unified_diff" or "rewrite")."""
    blocks = parse_blocks(reply)
    if blocks:
        return apply_blocks(source, blocks), "diff"
    hunks = parse_hunks(reply)
    if hunks:
        return apply_blocks(source, [Block(h.old, h.new) for h in hunks]), "unified_diff"
    program = full_program(reply)
    if program is not None and program.strip():
        return program if program.endswith("\n") else program + "\n", "rewrite"
    raise EditError(
        "no_code", "the reply has no SEARCH/REPLACE block, no unified diff and no ```python block"
    )


def apply_blocks(source: str, blocks: list[Block]) -> str:
    """Apply the blocks one after another; every block must match exactly one place."""
    problems = []
    for number, block in enumerate(blocks, 1):
        try:
            source = _apply_one(source, block)
        except EditError as exc:
            problems.append(f"block {number}: {exc}")
    if problems:
        raise EditError("no_match", "; ".join(problems))
    return source


def _apply_one(source: str, block: Block) -> str:
    """Replace the one place the SEARCH part quotes: verbatim, or as whole lines whose
    indentation differs, or (only when that finds nothing) whose spacing inside lines differs.

    A verbatim match must start a line and end a token: `BATCH = 1` is not a part of
    `BATCH = 16`, nor `LR = 3e-3` of `MIN_LR = 3e-3`; a line's trailing comment may be
    left out of the quote.
    """
    search = _trim_blank_edges(block.search)
    if not search.strip():
        raise EditError("no_match", "its SEARCH part is empty; quote the lines to change")
    exact = [m.start() for m in re.finditer(re.escape(search), source) if _bounded(source, m)]
    if len(exact) == 1:
        at = exact[0]
        return source[:at] + _trim_blank_edges(block.replace) + source[at + len(search) :]
    if len(exact) > 1:
        raise EditError(
            "no_match", f"its SEARCH text occurs {len(exact)} times; add lines to make it unique"
        )
    lines, wanted = source.split("\n"), search.split("\n")
    for loose in (False, True):  # same text first; spaces inside lines only if that finds nothing
        hits = {
            i: shift
            for i in range(len(lines) - len(wanted) + 1)
            if (shift := _shift(lines[i : i + len(wanted)], wanted, loose)) is not None
        }
        if hits:
            break
    if len(hits) != 1:
        head = wanted[0].strip()[:80]
        where = "is not in the program" if not hits else f"matches {len(hits)} places"
        raise EditError(
            "no_match",
            f"its SEARCH text starting {head!r} {where}; copy the lines "
            "exactly from the current program",
        )
    [(start, shift)] = hits.items()
    new = [_reindent(line, shift) for line in _trim_blank_edges(block.replace).split("\n")]
    return "\n".join(lines[:start] + new + lines[start + len(wanted) :])


def _bounded(source: str, match: re.Match) -> bool:
    """Only indentation before the match on its line, and no word or number running on after it."""
    line_start = source.rfind("\n", 0, match.start()) + 1
    after = source[match.end() : match.end() + 1]
    return not source[line_start : match.start()].strip() and not (
        after and (after.isalnum() or after in "_.")
    )


def _trim_blank_edges(text: str) -> str:
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _shift(have: list[str], want: list[str], loose: bool = False) -> tuple[str, str] | None:
    """(remove, add): the indentation the SEARCH lines need to become `have`, or None.

    Lines must agree after stripping trailing whitespace and one uniform change
    of leading whitespace (`loose`: and with every run of spaces inside a line
    counted as one space); blank lines match blank lines.
    """
    shift: tuple[str, str] | None = None
    for got, wanted in zip(have, want, strict=True):
        got, wanted = got.rstrip(), wanted.rstrip()
        if not got and not wanted:
            continue
        if not got or not wanted or _body(got, loose) != _body(wanted, loose):
            return None
        g_indent, w_indent = _indent(got), _indent(wanted)
        common = len(os.path.commonprefix([g_indent, w_indent]))
        this = (w_indent[common:], g_indent[common:])
        if shift is None:
            shift = this
        elif this != shift:
            return None
    return shift or ("", "")


def _body(line: str, loose: bool) -> str:
    """A line without its indentation; `loose`: with each run of whitespace made one space."""
    return " ".join(line.split()) if loose else line.lstrip()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(line: str, shift: tuple[str, str]) -> str:
    remove, add = shift
    if not line.strip():
        return line.rstrip()
    if remove and line.startswith(remove):
        line = line[len(remove) :]
    elif remove:
        line = _indent(line)[len(remove) :] + line.lstrip()  # less indented than the shift
    return add + line
