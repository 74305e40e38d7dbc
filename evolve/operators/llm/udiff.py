"""Unified diffs (`--- a/`, `+++ b/`, `@@ ... @@`) as LLMs write them, turned into SEARCH/REPLACE.

LLMs get a hunk's line numbers and counts wrong more often than not, so a hunk is
applied by its context, never by its numbers: its context and `-` lines are the
text to find (exactly once, with the same tolerance as a SEARCH block), its
context and `+` lines the text that replaces it. Strict parsers such as `unidiff`
refuse a hunk whose counts are off and skip `@@ @@` headers without numbers,
which are the common shapes here; hence these few lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@.*?@@")
_FILE_OLD = re.compile(r"^--- (?:a/|/dev/null|\S)")
_FILE_NEW = re.compile(r"^\+\+\+ (?:b/|/dev/null|\S)")
_FENCE = re.compile(r"^\s*```")


@dataclass
class Hunk:
    old: str  # context and removed lines
    new: str  # context and added lines


def parse_hunks(reply: str) -> list[Hunk]:
    """Every hunk of a unified diff in the reply (none: it holds no `@@` hunk header)."""
    lines = reply.splitlines()
    hunks: list[Hunk] = []
    i = 0
    while i < len(lines):
        if not _HUNK.match(lines[i]):
            i += 1
            continue
        old: list[str] = []
        new: list[str] = []
        i += 1
        while i < len(lines) and not _ends_hunk(lines, i):
            line = lines[i]
            tag, text = (line[:1], line[1:]) if line else (" ", "")
            if tag in (" ", "-"):
                old.append(text)
            if tag in (" ", "+"):
                new.append(text)
            i += 1
        if old or new:
            hunks.append(Hunk("\n".join(old), "\n".join(new)))
    return hunks


def _ends_hunk(lines: list[str], i: int) -> bool:
    line = lines[i]
    if _HUNK.match(line) or _FENCE.match(line) or line.startswith("diff --git"):
        return True
    if line.startswith("\\"):  # "\ No newline at end of file"
        return False
    if _FILE_OLD.match(line) and i + 1 < len(lines) and _FILE_NEW.match(lines[i + 1]):
        return True  # the next file's header, not a removed line
    return bool(line) and line[0] not in " +-"  # prose after the diff
