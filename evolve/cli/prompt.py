"""`evolve prompt`: print the messages the LLM operator would send now (and, with --send, one
reply and its diff). Without --send, stdout is exactly the messages; notes go to stderr."""

from __future__ import annotations

import click

from evolve.cli.group import cli, echo_json, echo_untrusted, raw_option
from evolve.config import RunConfig
from evolve.textsafe import printable


@cli.command()
@click.argument("run")
@click.argument("ident", metavar="[ID]", required=False)
@click.option(
    "--with",
    "other",
    metavar="ID2",
    default=None,
    help="A second parent: the prompt of an LLM crossover of ID with ID2.",
)
@click.option(
    "--rewrite", is_flag=True, help="Ask for a full rewrite instead of SEARCH/REPLACE edits."
)
@click.option("--aim", is_flag=True, help="Name a target niche, as an aimed mutation does.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Draws the target niche (--aim) and the model (--send).",
)
@click.option(
    "--send",
    is_flag=True,
    help="Make one call; show the reply and the diff it makes. Nothing is stored.",
)
@click.option("--llm-model", "models", multiple=True, help="Use this model instead of the run's.")
@click.option("--llm-base-url", default=None, help="Use this endpoint instead of the run's.")
@click.option(
    "--archive-dir", default=RunConfig.archive_dir, show_default=True, help="Where runs live."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: messages (and reply, diff).")
@raw_option
def prompt(
    run: str,
    ident: str | None,
    other: str | None,
    rewrite: bool,
    aim: bool,
    seed: int,
    send: bool,
    models: tuple[str, ...],
    llm_base_url: str | None,
    archive_dir: str,
    as_json: bool,
    raw: bool,
) -> None:
    """The exact messages an LLM mutation of ID (default: the best elite) would send now."""
    from evolve.browse import open_run
    from evolve.operators.llm.preview import preview, run_settings
    from evolve.operators.llm.preview import send as send_one
    from evolve.operators.llm.prompt import render

    with open_run(run, archive_dir) as archive:
        view = preview(
            archive,
            run_settings(archive, models, llm_base_url),
            ident,
            other,
            rewrite=rewrite,
            aim=aim,
            seed=seed,
        )
        sent = send_one(archive, view, seed) if send else None
    if as_json:
        data: dict = {"messages": view.draft.messages, "target": view.draft.meta().get("target")}
        if sent is not None:
            data.update(
                reply=sent.reply.text, model=sent.reply.model, diff=sent.diff, error=sent.error
            )
        echo_json(data)
        return
    for note in view.notes:
        click.echo(note, err=True)
    echo_untrusted(render(view.draft.messages) + "\n", raw)
    if sent is not None:  # stdout then holds the conversation: prompt, reply, diff
        click.echo(f"\n### reply from {printable(sent.reply.model)}")
        echo_untrusted(sent.reply.text.rstrip("\n") + "\n", raw)
        click.echo("\n### diff" if sent.diff else f"\n### unusable reply: {printable(sent.error)}")
        echo_untrusted(sent.diff, raw)
