"""Reading a genome file from the user: every problem becomes a UserError, never a traceback."""

from __future__ import annotations

from pathlib import Path

from evolve.errors import UserError


def read_genome(path: str, role: str = "genome file", flag: str = "FILE") -> str:
    """The source of a genome file, or a UserError saying what is wrong and what to pass."""
    file = Path(path)
    if not file.is_file():
        raise UserError(
            f"{role} {path} does not exist",
            "",
            f"pass the path of a training script as {flag}, e.g. train.py",
        )
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read {role} {path}", str(exc), "pass a UTF-8 Python file"
        ) from None
