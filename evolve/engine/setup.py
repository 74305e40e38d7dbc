"""Wiring for `evolve start` and `evolve resume`: config in, a ready Engine out.

Every setting is checked, and the LLM endpoint probed, before `start` creates the
run folder, so a bad setting leaves nothing behind; `resume` applies the same
checks to the stored config before the loop touches the run.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.archive import EliteRule, Grid, RunArchive
from evolve.config import RunConfig
from evolve.engine.foreign import check_harness
from evolve.engine.loop import Engine, RunState
from evolve.engine.proposer import Proposer
from evolve.engine.seeding import apply_imports, plan_for
from evolve.errors import UserError
from evolve.executors.base import Executor
from evolve.harness.data import Dataset, prepare
from evolve.operators import GenomeSyntaxError, check_syntax
from evolve.operators.llm import LLM
from evolve.operators.llm.preflight import Down, check, down_error
from evolve.operators.llm.wiring import build_llm
from evolve.operators.mix import OperatorMix
from evolve.runner.source import read_genome
from evolve.selection import CuriosityTracker, check_method


@dataclass
class Prepared:
    engine: Engine
    archive: RunArchive
    dataset: Dataset
    executor: Executor
    notes: list[str]

    def run_to_end(self) -> RunState:
        """Run the engine until it stops, then release the slots and the archive whatever
        happened: what tests and benchmarks do with a prepared run (the CLI also reports)."""
        try:
            return self.engine.run()
        finally:
            self.executor.shutdown()
            self.archive.close()


def read_seed(path: str) -> str:
    """A seed genome's source, checked for syntax, or a UserError saying what to fix."""
    source = read_genome(path, "seed genome", "--seed-genome FILE")
    try:
        check_syntax(source)
    except GenomeSyntaxError as exc:
        raise UserError(
            f"seed genome {path} is not valid Python", str(exc), "fix the syntax error"
        ) from None
    check_harness(path, source)  # with what to change for an autoresearch train.py
    return source


@dataclass
class Operators:
    """The operator mix and its LLM handle, built and checked before anything is written."""

    mix: OperatorMix
    llm: LLM | None
    notes: list[str]
    down: list[Down]


def plan_operators(config: RunConfig, run_dir: Path, resuming: bool = False) -> Operators:
    """Build the mix (unknown operators, bad weights or options, a bad selection: UserError),
    then probe the LLM: a bad key or model is a UserError, and so is an endpoint that does not
    answer unless `fallback` is set, in which case the run starts with the LLM marked down."""
    check_method(config.selection)
    llm, options, notes = build_llm(config.llm, config.operators, config.operator_options, run_dir)
    mix = OperatorMix(config.operators, cxpb=config.cxpb, options=options)
    down = check(llm) if llm is not None else []
    if down and not llm.settings.fallback:
        raise down_error(down, resume=resuming)
    return Operators(mix, llm, notes, down)


def default_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def _fingerprint(dataset: Dataset, device: str, executor: Executor) -> dict[str, Any]:
    import torch

    return {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "tokenizer": dataset.tokenizer,
        "device": device,
        "torch": torch.__version__,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "hardware_class": executor.hardware_class,
        "slot_classes": executor.slot_classes(),
    }


def start(config: RunConfig, build_executor: Any, on_update: Any = None) -> Prepared:
    """Create the run's archive and everything the loop needs."""
    sources = [read_seed(path) for path in config.seed_genomes]
    grid = Grid.from_list(config.descriptors)
    config.name = config.name or default_name()
    operators = plan_operators(config, Path(config.archive_dir) / config.name)
    dataset = prepare(config.data, tokenizer=config.tokenizer)
    imports = plan_for(config, dataset) if config.seed_from or config.seed_top else None
    seeds = [hashlib.sha256(s.encode()).hexdigest() for s in sources]
    executor, settings = build_executor(config, dataset)
    stored = {
        "config": config.to_dict(),
        "seeds": seeds,
        "fingerprint": _fingerprint(dataset, settings.device, executor),
        "created": time.time(),
    }
    if imports is not None:
        stored["imports"] = imports.stored()  # the proposer's first parents, also on resume
    prior = imports.noise_std if imports is not None else None
    noise = config.noise_std or prior or config.min_noise_std  # the floor until seeds measure it
    rule = EliteRule(
        noise_std=noise, z=config.z, confirm_n=config.confirm, prior_weight=config.noise_prior
    )
    try:
        archive = RunArchive.create(
            Path(config.archive_dir) / config.name, stored, grid=grid, rule=rule
        )
    except BaseException:
        executor.shutdown()  # e.g. the run exists: release slots (and a Ray connection) first
        raise
    for source in sources:
        archive.put_genome(source)
    notes = [] if imports is None else apply_imports(archive, imports, config.pop, config.rng_seed)
    return _assemble(config, archive, dataset, executor, seeds, on_update, notes, operators)


def resume(
    run_dir: str | Path,
    build_executor: Any,
    on_update: Any = None,
    llm_fallback: bool | None = None,
) -> Prepared:
    """Reopen a stopped or killed run with its stored config, as the single writer.

    `llm_fallback` overrides the stored [llm] fallback for this resume only."""
    archive = RunArchive.open(run_dir, writer=True)
    try:
        stored = archive.config
        config = RunConfig.from_dict(stored["config"])
        if llm_fallback is not None and config.llm:
            config.llm = {**config.llm, "fallback": llm_fallback}
        operators = plan_operators(config, archive.path, resuming=True)
        dataset = prepare(config.data, tokenizer=config.tokenizer)
        notes = []
        if dataset.fingerprint != stored["fingerprint"]["dataset_fingerprint"]:
            raise UserError(
                f"the dataset of run {archive.name} changed",
                f"it was {stored['fingerprint']['dataset_fingerprint']}, now "
                f"{dataset.fingerprint}: scores would not be comparable",
                "restore the original data, or start a new run seeded from this one",
            )
        executor, _ = build_executor(config, dataset)
        _keep_hardware_class(executor, stored["fingerprint"], config.mixed_hardware, archive.name)
        return _assemble(
            config, archive, dataset, executor, list(stored["seeds"]), on_update, notes, operators
        )
    except BaseException:
        archive.close()
        raise


def _keep_hardware_class(
    executor: Executor, fingerprint: dict[str, Any], mixed: bool, name: str
) -> None:
    """A resumed run compares scores only with those from the hardware it started on."""
    stored = fingerprint.get("hardware_class")
    if stored is None or stored == executor.hardware_class:
        return
    if not mixed:
        executor.shutdown()
        raise UserError(
            f"run {name} was measured on {stored}, but the slots here are "
            f"{executor.hardware_class}",
            "a 5-minute score on one machine is not a score on another",
            "resume on the same hardware, pass --mixed-hardware in the run config "
            "(results from other hardware are then kept out of comparisons), or "
            "start a new run with --seed-from",
        )
    executor.hardware_class = stored  # new results are flagged against the original class


def _assemble(
    config: RunConfig,
    archive: RunArchive,
    dataset: Dataset,
    executor: Executor,
    seeds: list[str],
    on_update: Any,
    notes: list[str],
    operators: Operators,
) -> Prepared:
    lock = threading.RLock()
    llm = operators.llm
    notes.extend(operators.notes)
    if llm is not None and operators.down:  # asked for: go on, and say so on its own line
        notes.append(llm.mark_down("; ".join(d.message() for d in operators.down)))
    imported = [i["genome"] for i in archive.config.get("imports", [])]
    proposer = Proposer(
        archive, operators.mix, config.selection, seeds + imported, lock, CuriosityTracker()
    )
    # Slow LLM calls run ahead of the slots: a fixed number, or (None) sized from measurements.
    workers = llm.settings.concurrency if llm else 1
    engine = Engine(
        config, archive, executor, proposer, seeds, lock, on_update, proposal_workers=workers
    )
    if llm is not None:
        engine.llm = llm
        llm.on_event = engine.notice  # down, back, cost cap: each a line of its own
    return Prepared(engine, archive, dataset, executor, notes)
