"""`evolve` command line: click commands only; the work happens in the rooms below.

Each module registers its commands on the group in `group.py`.
"""

from evolve.cli import (  # noqa: F401  (importing a module registers its commands)
    browse,  # runs, show, map, genome, diff, lineage, log, export, report
    prompt,  # prompt
    run,  # eval, start, resume
    serve,  # serve
)
from evolve.cli.group import cli


def main() -> None:
    cli(prog_name="evolve")


__all__ = ["cli", "main"]
