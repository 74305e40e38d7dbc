"""Errors meant for the user: what went wrong, why, and what to do about it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The CLI prints it without a traceback and exits with code 2."""

    exit_code = 2

    def __init__(self, what: str, why: str = "", fix: str = "") -> None:
        self.what, self.why, self.fix = what, why, fix
        super().__init__(self.message())

    def message(self) -> str:
        parts = [f"error: {self.what}"]
        if self.why:
            parts.append(f"  why: {self.why}")
        if self.fix:
            parts.append(f"  fix: {self.fix}")
        return "\n".join(parts)
