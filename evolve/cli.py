"""`evolve` command line: click commands only; the work happens in the rooms below."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from evolve.errors import UserError


class _Group(click.Group):
    """Turns UserError into a clear message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(exc.message(), err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="evolve")
def cli() -> None:
    """Evolutionary population search over training scripts, scored by a trusted harness."""


def positive(kind: type = float) -> click.ParamType:
    return click.IntRange(min=1) if kind is int else click.FloatRange(min=0, min_open=True)


@cli.command("eval")
@click.argument("genome", type=click.Path(dir_okay=False))
@click.option("--budget", type=positive(), default=300.0, show_default=True,
              help="Training budget in seconds (wall clock, imports included).")
@click.option("--data", default="builtin", show_default=True,
              help="Corpus: builtin, a .txt/.parquet file, a folder, tinystories or climbmix[:N].")
@click.option("--tokenizer", default="byte", show_default=True, help="byte, or bpe-N (needs .[bpe]).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--eval-tokens", type=positive(int), default=65536, show_default=True,
              help="Held-out tokens scored for val_bpb (the same for every genome).")
@click.option("--seed", type=int, default=0, show_default=True, help="Evaluation seed, set by the harness.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where the sandbox and log go (default: a new temporary folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON.")
def eval_command(genome: str, budget: float, data: str, tokenizer: str, device: str,
                 eval_tokens: int, seed: int, workdir: str | None, as_json: bool) -> None:
    """Evaluate one GENOME under the harness and print its summary.

    Exit code 0 when the genome was scored, 1 when it failed (the record says why),
    2 for bad input.
    """
    from evolve.harness.data import prepare
    from evolve.runner import RunSettings, run_genome
    from evolve.runner.devices import resolve_device

    source = read_genome(genome)
    dataset = prepare(data, tokenizer=tokenizer)
    folder = Path(workdir or tempfile.mkdtemp(prefix="evolve-eval-"))
    settings = RunSettings(budget=budget, device=resolve_device(device), eval_tokens=eval_tokens,
                           seed=seed)
    if not as_json:
        click.echo(f"evaluating {genome} on {dataset.name} ({dataset.fingerprint}) for "
                   f"{budget:g} s on {settings.device}; log: {folder / 'log.txt'}", err=True)
    result = run_genome(source, dataset, settings, folder / "work", folder / "log.txt")
    click.echo(result.to_json() if as_json else result.summary())
    sys.exit(0 if result.ok else 1)


def read_genome(path: str) -> str:
    """A genome's source, or a UserError that says what is wrong with the file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"genome file {path} does not exist", "",
                        "pass the path of a training script, e.g. train.py")
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read genome file {path}", str(exc), "pass a UTF-8 Python file") from None


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def main() -> None:
    cli(prog_name="evolve")


if __name__ == "__main__":
    main()
