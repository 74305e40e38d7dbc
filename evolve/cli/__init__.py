"""`evolve` command line: click commands only; the work happens in the rooms below.

Each module registers its commands on the group in `group.py`.
"""

from evolve.cli import run  # noqa: F401  (registers eval, start, resume)
from evolve.cli.group import cli


def main() -> None:
    cli(prog_name="evolve")


__all__ = ["cli", "main"]
