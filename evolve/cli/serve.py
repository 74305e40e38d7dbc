"""`evolve serve`: the archive as a live local web page. The work happens in evolve.browse.server."""

from __future__ import annotations

import click

from evolve.cli.group import cli
from evolve.config import RunConfig


@cli.command()
@click.option(
    "--archive-dir", default=RunConfig.archive_dir, show_default=True, help="Where runs live."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes the archive to the network.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--poll",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.2),
    help="Seconds between the page's checks for new results.",
)
@click.option("--access-log", is_flag=True, help="Print one line per request.")
def serve(archive_dir: str, host: str, port: int, poll: float, access_log: bool) -> None:
    """Browse the runs under the archive directory in a web browser, live while they run.

    Read-only: it never takes a run's lock and never writes to the archive.
    """
    from evolve.browse.server import is_loopback
    from evolve.browse.server import serve as run_server

    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}, not on loopback: anyone who can reach this "
            "machine can read every genome, log and LLM exchange of the archive; there "
            "is no login. Use --host 127.0.0.1 and an SSH tunnel instead.",
            err=True,
        )
    run_server(
        archive_dir,
        host,
        port,
        poll_seconds=poll,
        access_log=access_log,
        announce=lambda line: click.echo(line),
    )
