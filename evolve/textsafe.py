"""Text that a genome or an LLM wrote, made safe to show on a terminal or in a prompt.

A genome's log, its source, an LLM's idea line or a failure reason are untrusted.
Printed raw, an escape sequence in them reaches the reader's terminal: a window
title change (OSC 0), a clipboard write (OSC 52), a hyperlink (OSC 8), cursor
movement that hides lines (CSI), C1 controls that some terminals honour, and
bidi overrides that make text read differently from what it is. `printable`
turns each such character into a visible escape (`\\x1b`, `\\u202e`) and keeps
newlines and tabs, so the text is still readable and nothing is hidden.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides, isolates and
# marks; line/paragraph separators; lone surrogates (they cannot even be encoded).
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control, escape and bidi character shown as a visible escape.

    A Windows line end (CR LF) becomes a plain newline; a lone CR, which would let
    a later line overwrite an earlier one, is shown as `\\x0d`.
    """
    return UNSAFE.sub(_escape, text.replace("\r\n", "\n"))
