"""Commands that read archives: runs, show, map, genome, diff, lineage, log, export, report.

All of them open runs read-only and never take the lock, so they work while a
run is writing. The work happens in evolve.browse; these only print.
"""

from __future__ import annotations

from pathlib import Path

import click

from evolve.cli.group import cli, echo_json, echo_untrusted, raw_option
from evolve.config import RunConfig

archive_option = click.option(
    "--archive-dir", default=RunConfig.archive_dir, show_default=True, help="Where runs live."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@cli.command()
@archive_option
@json_option
def runs(archive_dir: str, as_json: bool) -> None:
    """Every run under the archive directory, with its status and best val_bpb."""
    from evolve.browse.runs import run_rows
    from evolve.browse.views import console, runs_table

    rows = run_rows(archive_dir)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(f"no runs under {archive_dir}", err=True)
    else:
        console().print(runs_table(rows))


@cli.command()
@click.argument("run")
@archive_option
@json_option
def show(run: str, archive_dir: str, as_json: bool) -> None:
    """The elites of RUN, best val_bpb first."""
    from evolve.browse import open_run
    from evolve.browse.curve import coverage_line
    from evolve.browse.queries import elite_rows
    from evolve.browse.views import console, elites_table
    from evolve.operators.llm.summary import describe, read_stats

    with open_run(run, archive_dir) as archive:
        rows = elite_rows(archive)
        if as_json:
            echo_json(rows)
        else:
            stats = read_stats(archive.path)
            lines = [describe(stats) if stats is not None else None, coverage_line(archive)]
            caption = "\n".join(line for line in lines if line) or None
            console().print(elites_table(archive.name, rows, caption))
            _show_curve(archive, rows)


def _show_curve(archive, rows: list[dict]) -> None:
    """Under `show`: the best elite's reported curve, and what pruning gave back."""
    from evolve.browse.curves import describe as curve_text
    from evolve.browse.curves import pruning_summary

    pruned = pruning_summary(archive.evaluations())
    if pruned:
        click.echo(f"pruning: {pruned}")
    if rows:
        best = archive.get(rows[0]["id"])
        text = curve_text(best.result) if best else ""
        if text:
            click.echo(f"best elite {rows[0]['id']}: {text}")


@cli.command("map")
@click.argument("run")
@archive_option
@json_option
def map_command(run: str, archive_dir: str, as_json: bool) -> None:
    """The MAP-Elites grid of RUN, each cell coloured by its elite's val_bpb."""
    from evolve.browse import open_run
    from evolve.browse.gridview import grid_view, view_json
    from evolve.browse.locate import first_ids
    from evolve.browse.termmap import map_table
    from evolve.browse.views import console

    with open_run(run, archive_dir) as archive:
        elites = archive.elites()
        view = grid_view(archive.grid, elites)
        if as_json:
            echo_json(view_json(archive.grid, view, first_ids(archive)))
        else:
            console().print(map_table(view, archive.grid.total_cells, len(elites)))


@cli.command()
@click.argument("run")
@click.argument("ident", metavar="ID")
@archive_option
@raw_option
def genome(run: str, ident: str, archive_dir: str, raw: bool) -> None:
    """The source of genome ID (an evaluation id like e000012, or a hash prefix)."""
    from evolve.browse import open_run, resolve

    with open_run(run, archive_dir) as archive:
        echo_untrusted(archive.genome_source(resolve(archive, ident).genome), raw)


@cli.command()
@click.argument("run")
@click.argument("a")
@click.argument("b", required=False)
@archive_option
@raw_option
def diff(run: str, a: str, b: str | None, archive_dir: str, raw: bool) -> None:
    """Unified diff of genome A against its parent, or from A to B."""
    from evolve.browse import open_run, resolve
    from evolve.browse.queries import diff_text

    with open_run(run, archive_dir) as archive:
        other = resolve(archive, b) if b else None
        echo_untrusted(diff_text(archive, resolve(archive, a), other), raw)


@cli.command()
@click.argument("run")
@click.argument("ident", metavar="ID")
@archive_option
@json_option
def lineage(run: str, ident: str, archive_dir: str, as_json: bool) -> None:
    """The ancestry of ID: each step's change and its val_bpb delta against its parent."""
    from evolve.browse import open_run, resolve
    from evolve.browse.queries import lineage as lineage_of
    from evolve.browse.views import console, lineage_table

    with open_run(run, archive_dir) as archive:
        steps = lineage_of(archive, resolve(archive, ident))
        if as_json:
            echo_json(steps)
        else:
            console().print(lineage_table(steps))


@cli.command()
@click.argument("run")
@click.argument("ident", metavar="ID")
@archive_option
@raw_option
def log(run: str, ident: str, archive_dir: str, raw: bool) -> None:
    """The training log of evaluation ID (also while it is running).

    The genome wrote it: escape sequences in it are shown, not sent to the terminal (--raw
    prints the bytes as they are).
    """
    from evolve.browse import open_run, resolve
    from evolve.browse.curves import describe
    from evolve.browse.queries import log_file

    with open_run(run, archive_dir) as archive:
        target = resolve(archive, ident)
        echo_untrusted(log_file(archive, target, ident).read_bytes(), raw)
        curve = "" if raw or target.record is None else describe(target.record.result)
        if curve:
            click.echo("\n" + curve)


@cli.command()
@click.argument("run")
@click.argument("ident", metavar="[ID]", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="File to write the genome to.",
)
@archive_option
@json_option
def export(run: str, ident: str | None, output: str, archive_dir: str, as_json: bool) -> None:
    """Write genome ID (default: the confirmed best) of RUN to a file."""
    from evolve.browse import open_run
    from evolve.browse.queries import export_target

    with open_run(run, archive_dir) as archive:
        target, note, confirmed = export_target(archive, ident)
        Path(output).write_text(archive.genome_source(target.genome))
    if note:
        click.echo(note, err=True)
    if as_json:
        echo_json(
            {"path": output, "id": target.id, "genome": target.genome, "confirmed": confirmed}
        )
    else:
        click.echo(f"wrote {output} ({target.id}, genome {target.genome[:12]})")


@cli.command()
@click.argument("run")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the page, pictures and sources [default: report-RUN].",
)
@archive_option
def report(run: str, output: str | None, archive_dir: str) -> None:
    """An HTML report of RUN (progress plot, grid, elites with sources and diffs) that opens from disk."""
    from evolve.browse import open_run
    from evolve.browse.report import write_report

    with open_run(run, archive_dir) as archive:
        index = write_report(archive, Path(output or f"report-{archive.name}"))
    click.echo(f"wrote {index}")
