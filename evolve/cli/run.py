"""Commands that run genomes: eval, start, resume."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from evolve.browse.locate import run_path
from evolve.cli.group import cli, positive
from evolve.config import DEVICES, EXECUTORS, PRUNE_MODES, RunConfig, default
from evolve.runner.run import SPLITS, RunSettings
from evolve.textsafe import printable


def shown(key: str) -> str:
    """RunConfig's default for `key` as a help text quotes it (`[default: 300]`)."""
    value = default(key)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


@cli.command("eval")
@click.argument("genome", type=click.Path(dir_okay=False))
@click.option(
    "--budget",
    type=positive(),
    default=RunConfig.budget,
    show_default=True,
    help="Training budget in seconds (wall clock, imports included).",
)
@click.option(
    "--data",
    default=RunConfig.data,
    show_default=True,
    help="Corpus: builtin, a .txt/.parquet file, a folder, tinystories or climbmix[:N].",
)
@click.option(
    "--tokenizer",
    default=RunConfig.tokenizer,
    show_default=True,
    help="byte, or bpe-N (needs .[bpe]).",
)
@click.option("--device", type=click.Choice(DEVICES), default=RunConfig.device, show_default=True)
@click.option(
    "--eval-tokens",
    type=positive(int),
    default=RunConfig.eval_tokens,
    show_default=True,
    help="Held-out tokens scored for val_bpb (the same for every genome).",
)
@click.option(
    "--seed",
    type=int,
    default=RunSettings.seed,
    show_default=True,
    help="Evaluation seed, set by the harness.",
)
@click.option(
    "--max-source-bytes",
    type=positive(int),
    default=RunConfig.max_source_bytes,
    show_default=True,
    help="A genome with more source bytes is invalid before it runs.",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default=RunSettings.split,
    show_default=True,
    help="Held-out split that scores: val (selection) or the sealed test split.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the sandbox and log go (default: a new temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON.")
def eval_command(
    genome: str,
    budget: float,
    data: str,
    tokenizer: str,
    device: str,
    eval_tokens: int,
    seed: int,
    max_source_bytes: int,
    split: str,
    workdir: str | None,
    as_json: bool,
) -> None:
    """Evaluate one GENOME under the harness and print its summary.

    Exit code 0 when the genome was scored, 1 when it failed (the record says why),
    2 for bad input.
    """
    from evolve.harness.data import prepare
    from evolve.runner import run_genome
    from evolve.runner.devices import resolve_device
    from evolve.runner.source import read_genome

    check_torch()
    source = read_genome(genome)
    dataset = prepare(data, tokenizer=tokenizer)
    folder = Path(workdir or tempfile.mkdtemp(prefix="evolve-eval-"))
    settings = RunSettings(
        budget=budget,
        device=resolve_device(device),
        eval_tokens=eval_tokens,
        seed=seed,
        max_source_bytes=max_source_bytes,
        split=split,
    )
    if not as_json:
        click.echo(
            f"evaluating {genome} on {dataset.name} ({dataset.fingerprint}) for "
            f"{budget:g} s on {settings.device}; log: {folder / 'log.txt'}",
            err=True,
        )
    result = run_genome(source, dataset, settings, folder / "work", folder / "log.txt")
    click.echo(result.to_json() if as_json else printable(result.summary()))  # reason: genome text
    sys.exit(0 if result.ok else 1)


def check_torch(version: str | None = None) -> None:
    """Say before any work when the installed torch exports models the evaluator would refuse:
    an error when every genome would be `invalid`, a warning when that torch is untested."""
    import importlib.metadata

    from evolve.errors import UserError
    from evolve.harness.vet import SUPPORTED_TEXT, torch_support

    if version is None:
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            import torch

            version = torch.__version__
    problem = torch_support(version)
    if problem is None:
        return
    kind, why = problem
    if kind == "new":
        click.echo(f"warning: {why}", err=True)
        return
    raise UserError(
        f"torch {version} cannot be used with evolve",
        why,
        f'install a supported torch ({SUPPORTED_TEXT}): pip install "torch>=2.11,<2.15"',
    )


def run_options(func):
    """Flags shared by `start` (all of them) and documented once."""
    options = [
        click.option(
            "--pop",
            type=int,
            default=None,
            help=f"Children per generation [default: {shown('pop')}].",
        ),
        click.option(
            "--generations",
            type=int,
            default=None,
            help="Stop after N generations (generation 0 holds the seeds) [default: run until stopped].",
        ),
        click.option(
            "--time-limit",
            type=float,
            default=None,
            help="Stop issuing work after this many seconds of wall time; running evaluations finish.",
        ),
        click.option(
            "--budget",
            type=float,
            default=None,
            help=f"Training seconds per evaluation [default: {shown('budget')}].",
        ),
        click.option(
            "--data",
            default=None,
            help="Corpus: builtin, a file or folder, tinystories, climbmix[:N].",
        ),
        click.option(
            "--name",
            default=None,
            help="Run name (folder under --archive-dir) [default: run-DATE-TIME].",
        ),
        click.option(
            "--archive-dir",
            default=None,
            help=f"Where runs live [default: {shown('archive_dir')}].",
        ),
        click.option(
            "--seed-genome",
            "seed_genomes",
            multiple=True,
            help="Seed genome file; repeat for several "
            f"[default: {shown('seed_genomes')}, none with --seed-from].",
        ),
        click.option(
            "--seed-from",
            "seed_from",
            multiple=True,
            help="Start from the elites of a past run (name or path); repeat to merge runs; "
            "RUN:e000012,e000040 takes those. Re-evaluated here if budget, data or "
            "device differ.",
        ),
        click.option(
            "--seed-top",
            type=int,
            default=None,
            help="With --seed-from: only the K best elites of each run.",
        ),
        click.option(
            "--device",
            type=click.Choice(DEVICES),
            default=None,
            help=f"auto: every visible GPU, else the CPU [default: {shown('device')}].",
        ),
        click.option(
            "--devices",
            default=None,
            help="Slots: GPU ids '0,1', or 'cpu:N' / 'cpu:NxT' for N CPU slots (of T threads) "
            "[default: all GPUs / one CPU slot].",
        ),
        click.option(
            "--executor",
            type=click.Choice(EXECUTORS),
            default=None,
            help=f"Where evaluations run [default: {shown('executor')}].",
        ),
        click.option(
            "--ray-address", default=None, help="Ray cluster address for --executor ray, or 'auto'."
        ),
        click.option(
            "--threads",
            type=int,
            default=None,
            help="CPU threads per slot (per Ray task) [default: the cores split between slots].",
        ),
        click.option(
            "--mixed-hardware/--no-mixed-hardware",
            default=None,
            help="Allow slots of different hardware classes; off-class results are flagged "
            "and kept out of comparisons [default: refuse].",
        ),
        click.option(
            "--eval-tokens",
            type=int,
            default=None,
            help=f"Held-out tokens scored [default: {shown('eval_tokens')}].",
        ),
        click.option(
            "--prune",
            type=click.Choice(PRUNE_MODES),
            default=None,
            help="Stop a child whose reported training loss is clearly behind its "
            "parent's at the same training time (checkpoints: prune_checkpoints in "
            "--config); shadow: only record when it would have "
            f"[default: {shown('prune')}].",
        ),
        click.option(
            "--max-source-bytes",
            type=int,
            default=None,
            help="Genomes with more source bytes are invalid before they run "
            f"[default: {shown('max_source_bytes')}].",
        ),
        click.option(
            "--selection",
            default=None,
            help="Parent selection: uniform, fitness, tournament, curiosity.",
        ),
        click.option(
            "--strategy",
            default=None,
            help="Search: map-elites (an archive of elites), greedy (autoresearch: one "
            "lineage, each child from the current best) or random (children of the "
            f"seed) [default: {shown('strategy')}].",
        ),
        click.option(
            "--z",
            type=float,
            default=None,
            help="A challenger must be lower by z noise std to win; 0: any lower score "
            f"wins [default: {shown('z')}].",
        ),
        click.option(
            "--max-evals",
            type=int,
            default=None,
            help="Stop issuing work after this many evaluations (re-evaluations included).",
        ),
        click.option(
            "--llm-model",
            "llm_models",
            multiple=True,
            help="LLM for mutation and crossover; repeat for an ensemble (weights, "
            "temperatures, prices: [[llm.models]] in --config) [default: none, "
            "built-in operators only].",
        ),
        click.option(
            "--llm-base-url",
            default=None,
            help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
            "[default: the OpenAI API; key from OPENAI_API_KEY].",
        ),
        click.option(
            "--max-llm-cost",
            type=float,
            default=None,
            help="Hard cap in USD on LLM spend for the run; then built-in operators only.",
        ),
        click.option(
            "--llm-fallback/--no-llm-fallback",
            default=None,
            help="If the LLM endpoint does not answer at start, go on with the built-in "
            "operators and retry the LLM during the run [default: stop, exit 2].",
        ),
        click.option(
            "--llm-concurrency",
            type=int,
            default=None,
            help="LLM proposals prepared in parallel with evaluations [default: auto, "
            "enough that slots never wait, from measured LLM and evaluation times].",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="TOML file with any run setting; flags override it.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@run_options
def start(config_file: str | None, **flags: object) -> None:
    """Start a population search (default seed: train.py, no LLM needed).

    Ctrl-C stops cleanly and at once: evaluations in flight are recorded as
    interrupted, LLM calls in flight are abandoned (counted at their worst-case
    cost), and `evolve resume RUN` continues the run.
    """
    from evolve.config import build_config
    from evolve.engine import start as start_run
    from evolve.engine.seeding import without_default_seed

    check_torch()
    config = build_config(config_file, without_default_seed(config_file, flags))
    _drive(lambda on_update: start_run(config, _executor_factory(), on_update))


@cli.command()
@click.argument("run")
@click.option(
    "--archive-dir", default=RunConfig.archive_dir, show_default=True, help="Where runs live."
)
@click.option(
    "--llm-fallback/--no-llm-fallback",
    default=None,
    help="If the LLM endpoint does not answer, go on with the built-in operators and "
    "retry the LLM during the run [default: as the run was started].",
)
def resume(run: str, archive_dir: str, llm_fallback: bool | None) -> None:
    """Continue a stopped or killed RUN with its stored config; nothing is repeated or lost."""
    from evolve.engine import resume as resume_run

    check_torch()
    _drive(
        lambda on_update: resume_run(
            run_path(run, archive_dir), _executor_factory(), on_update, llm_fallback=llm_fallback
        )
    )


def _executor_factory():
    from evolve.executors.factory import build_executor

    return build_executor


def _drive(prepare_run) -> None:
    """Run the engine with live progress; Ctrl-C stops it cleanly and says how to resume."""
    import signal

    from evolve.browse.testsplit import best_test_line
    from evolve.cli.progress import Progress, headline

    with Progress() as progress:
        prepared = prepare_run(progress.update)
        engine, archive = prepared.engine, prepared.archive
        for note in prepared.notes:
            click.echo(printable(note), err=True)

        def interrupt(signum, frame):  # first Ctrl-C: stop cleanly; the loop returns soon
            click.echo("\nstopping: cancelling evaluations in flight…", err=True)
            engine.stop(hard=True)

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            state = engine.run()
        finally:
            signal.signal(signal.SIGINT, previous)
            prepared.executor.shutdown()
            final = engine.snapshot()
            try:
                with engine.lock:
                    tested = best_test_line(archive)
            finally:
                archive.close()
    click.echo(headline(final))
    if tested:
        click.echo(tested)
    best = final.best
    click.echo(
        printable(
            f"run {archive.name}: {state.stop_reason}; {final.evals} evaluations in {archive.path}"
        )
    )  # a stop reason may quote an operator's error
    if final.llm is not None:
        from evolve.operators.llm.summary import describe

        click.echo(printable(describe(final.llm)))
    if best is not None and best.n < engine.config.confirm:
        click.echo(
            f"note: the best has {best.n} evaluation(s), fewer than the {engine.config.confirm} "
            "that confirm it",
            err=True,
        )
    if state.stop_reason != "finished":
        click.echo(f"resume with: evolve resume {archive.path}")
