"""The `evolve` command group; it turns UserError into a clear message and exit code 2."""

from __future__ import annotations

import json

import click

from evolve.errors import UserError
from evolve.textsafe import printable


class _Group(click.Group):
    """Turns UserError into a clear message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(printable(exc.message()), err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="evolve")
def cli() -> None:
    """Evolutionary population search over training scripts, scored by a trusted harness."""


def positive(kind: type = float) -> click.ParamType:
    return click.IntRange(min=1) if kind is int else click.FloatRange(min=0, min_open=True)


def echo_json(data: object) -> None:
    """--json output: stable key order, anything unusual as a string."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


raw_option = click.option(
    "--raw", is_flag=True, help="Print the bytes as stored (escape sequences included), for piping."
)


def echo_untrusted(data: str | bytes, raw: bool = False) -> None:
    """Text a genome or an LLM wrote: control and escape sequences made visible, so they never
    reach the reader's terminal; with --raw, exactly as stored."""
    if raw:
        out = click.get_binary_stream("stdout")
        out.write(data if isinstance(data, bytes) else data.encode(errors="surrogateescape"))
        out.flush()
        return
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    click.echo(printable(text), nl=False)
