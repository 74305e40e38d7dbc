"""The evolution loop: keep every slot busy with the next task, record every result.

Steady state rather than lock-step generations: proposals (possibly slow LLM
calls) run in a thread pool ahead of the slots, so a slot that frees up finds
a child ready. A "generation" is the bookkeeping unit of `pop` children; its
statistics go to the archive's logbook once all of its tasks are done.

Every task is written to `pending/` before it runs and removed after its record
is stored, so kill -9 loses only what was in flight, and `resume` reruns it
under the same id.

Selection sees the val split only. Each genome that becomes the confirmed best
(the elite reported as best, with `confirm` evaluations) is scored once more on
the sealed test split, a task of kind "test"; that record is reported beside the
val score and kept out of the map, the noise level, curiosity and the logbook.
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from evolve.archive import Decision, RunArchive
from evolve.archive.pending import PendingTasks, Task
from evolve.config import RunConfig
from evolve.engine.daemons import DaemonPool
from evolve.engine.proposer import Proposer
from evolve.engine.pruning import Pruning
from evolve.engine.snapshot import Snapshot
from evolve.engine.snapshot import take as take_snapshot
from evolve.engine.strategy import OBSERVED, make_strategy
from evolve.executors.base import EvalRequest, Executor
from evolve.operators import VariationError
from evolve.record import EvalResult

MAX_LOST = 3  # an evaluation lost to infrastructure this often is recorded as lost
AUTO_START = 4  # proposals in flight before there are measurements to size them by
AUTO_MARGIN = 1.5  # in flight = margin x slots x proposal latency / evaluation time
NOT_ISSUED = ("reeval", "test")  # task kinds that are no new member of the population
TEST_IDEA = "sealed test-split score of the confirmed best"
RACE_IDEA = "race: re-evaluation of a challenger that is better by less than the noise margin"


class _Mean:
    """An exponential moving mean: recent proposal latencies and evaluation times."""

    def __init__(self, weight: float = 0.3) -> None:
        self.value: float | None = None
        self.weight = weight

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x


@dataclass
class RunState:
    """Counters the progress display and the final summary read."""

    started: float = field(default_factory=time.monotonic)
    issued: int = 0  # children and seeds issued (re-evaluations not counted)
    planned: float = math.inf
    done: int = 0  # evaluations recorded by this process
    total: int = 0  # evaluations in the archive
    failed_proposals: int = 0  # variations that failed (each retried with another operator)
    statuses: Counter = field(default_factory=Counter)
    gen: int = 0
    stop_reason: str = ""
    last_events: deque = field(default_factory=lambda: deque(maxlen=6))
    notices: list = field(default_factory=list)  # lines that must be seen: LLM down, back, capped


class Engine:
    def __init__(
        self,
        config: RunConfig,
        archive: RunArchive,
        executor: Executor,
        proposer: Proposer,
        seeds: list[str],
        lock: threading.RLock,
        on_update: Any = None,
        proposal_workers: int | None = 1,
    ) -> None:
        """`proposal_workers` None: as many proposals in flight as keep the slots busy."""
        self.config, self.archive, self.executor = config, archive, executor
        self.proposer, self.seeds, self.lock = proposer, seeds, lock
        self.pending = PendingTasks(archive.path)
        self.state = RunState()
        self.on_update = on_update or (lambda engine: None)
        self._stop = threading.Event()
        self._hard_stop = threading.Event()
        self._ready: deque[Task] = deque()
        self._running: dict[Future, tuple[Task, EvalRequest]] = {}
        self._proposing: dict[Future, int] = {}
        self._fixed_workers = proposal_workers
        self._max_workers = proposal_workers or max(16, 2 * len(executor.slots))
        self._proposals = DaemonPool(self._max_workers, "propose")  # Ctrl-C never waits for an LLM
        self._propose_seconds, self._eval_seconds = _Mean(), _Mean()
        self._per_gen: Counter = Counter()  # evaluations stored per generation
        self._filled: Counter = (
            Counter()
        )  # seeds and children stored per generation (pop closes it)
        self._failed_ops: dict[int, Counter] = {}  # generation -> operator -> failed variations
        self._retry: deque[int] = deque()  # indices whose proposal failed: proposed again
        self._attempts: Counter = Counter()  # index -> proposals of it that failed
        self._failed_rounds = 0  # proposals that failed with every operator tried
        self._reevals: Counter = Counter()  # re-evaluations issued per genome
        self._tested: set[str] = set()  # genomes whose test-split evaluation is stored or queued
        self._closed: set[int] = {int(row["gen"]) for row in archive.logbook()}
        self._seed_tasks = len(seeds) * config.noise_repeats
        self._val_evals = 0  # val evaluations in the archive (the max_evals budget counts these)
        self.strategy = make_strategy(
            config.strategy, archive, proposer.seeds, config.exploit, config.screen
        )
        proposer.strategy = self.strategy
        self.llm: Any = None  # the run's LLM handle, set by setup when an LLM is configured
        self.pruning = Pruning(config, archive, seeds)  # children's reference curves (--prune)

    # --- control -----------------------------------------------------------------

    def stop(self, hard: bool = True) -> None:
        """Stop issuing work; hard=True also cancels evaluations in flight (Ctrl-C)."""
        self._stop.set()
        if hard:
            self._hard_stop.set()
            for _, request in self._running.values():
                request.cancel.set()

    def notice(self, message: str) -> None:
        """A line that must be seen (the progress display prints it on its own); any thread."""
        self.state.notices.append(message)
        self.state.last_events.append(message)

    @property
    def notices(self) -> list[str]:
        """Lines that must be seen, oldest first (LLM down, back, capped); append-only."""
        return self.state.notices

    def snapshot(self) -> Snapshot:
        """What a person watching the run wants to know, as a frozen value (any thread)."""
        return take_snapshot(self, outstanding=len(self._running) + len(self._ready))

    def llm_stats(self) -> dict[str, Any] | None:
        """LLM calls, failures, tokens and cost so far, for the progress display (None: no LLM)."""
        return None if self.llm is None else self.llm.stats()

    # --- main loop -----------------------------------------------------------------

    def run(self) -> RunState:
        state = self.state
        if self.config.generations:
            state.planned = self.config.generations * self.config.pop
        self._recover()
        deadline = state.started + self.config.time_limit if self.config.time_limit else math.inf
        try:
            while True:
                if time.monotonic() >= deadline and not self._stop.is_set():
                    state.stop_reason = "time limit reached"
                    self.stop(hard=False)
                limit = self.config.max_evals
                if limit and self._val_evals >= limit and not self._stop.is_set():
                    state.stop_reason = "evaluation limit reached"
                    self.stop(hard=False)
                if not self._stop.is_set():
                    self._fill()
                if self._stop.is_set():
                    # queued tasks stay in pending/ for resume; proposals are not awaited on Ctrl-C
                    if not self._running and (self._hard_stop.is_set() or not self._proposing):
                        break
                elif not self._running and not self._proposing and not self._ready:
                    if not self._confirm_best():
                        break
                    continue
                if not self._running and not self._proposing:
                    # every slot is gone (e.g. all Ray nodes died): wait for one to come back
                    self.state.last_events.append("waiting for an evaluation slot")
                    time.sleep(1.0)
                finished, _ = wait(
                    [*self._running, *self._proposing], timeout=0.5, return_when=FIRST_COMPLETED
                )
                for future in finished:
                    if future in self._proposing:
                        self._take_proposal(future)
                    else:
                        self._take_result(future)
                self._close_generations()
                self.on_update(self)
        finally:
            self._proposals.shutdown()
            if self._proposing and self.llm is not None:
                self.llm.abandon()  # calls still in flight are counted at their worst-case cost
        if not state.stop_reason:
            state.stop_reason = "finished" if not self._stop.is_set() else "stopped"
        self.on_update(self)
        return state

    def _recover(self) -> None:
        """Count what the archive already holds and queue the tasks a crash left pending."""
        records = list(self.archive.evaluations())
        stored = {r.id for r in records}
        val = [r for r in records if not r.sealed]
        self._tested = {r.genome for r in records if r.sealed}
        self._per_gen.update(int(r.generation) for r in val)
        self._val_evals = len(val)
        # a race is a task of kind "reeval" whose record says "race": a repeat, no child
        self._filled.update(int(r.generation) for r in val if not r.is_repeat)
        self.state.total = len(records)
        self.state.statuses.update(r.status for r in records)
        present = Counter(self._filled)
        for task in self.pending.all():
            if task.id in stored:  # killed between storing the record and clearing the task
                self.pending.done(task.id)
                continue
            self._ready.append(task)
            present[task.gen] += task.kind not in NOT_ISSUED
            if task.split != "val":
                self._tested.add(task.genome)
        self._plan_refill(present)
        if records or self._ready:
            self.state.gen = max(
                [int(r.generation) for r in records] + [t.gen for t in self._ready]
            )
        self._update_noise()

    def _plan_refill(self, present: Counter) -> None:
        """Continue the numbering after the last generation begun; proposals that were in flight
        when the run stopped (never written) leave holes in earlier generations: propose them."""
        pop = self.config.pop
        last = max((g for g, n in present.items() if n), default=None)
        if last is None:
            self.state.issued = 0
            return
        for gen in range(last):
            self._retry.extend(gen * pop + k for k in range(present[gen], pop))
        self.state.issued = last * pop + min(present[last], pop)

    def _fill(self) -> None:
        """Start evaluations on free slots and keep proposals running ahead of them."""
        free = len(self.executor.slots) - len(self._running)
        while free > 0 and self._ready:
            self._start(self._ready.popleft())
            free -= 1
        wanted = len(self.executor.slots) + self.proposal_workers()
        while len(self._ready) + len(self._proposing) < wanted:
            if self._retry:  # a failed proposal is not a child: its place is proposed again
                index = self._retry.popleft()
            elif self.state.issued < self.state.planned:
                index = self.state.issued
                self.state.issued += 1
            else:
                break
            self._proposing[self._proposals.submit(self._propose, index)] = index

    def proposal_workers(self) -> int:
        """Proposals to run at once: fixed, or by Little's law so that no slot waits for one."""
        if self._fixed_workers is not None:
            return self._fixed_workers
        latency, evaluation = self._propose_seconds.value, self._eval_seconds.value
        if latency is None or not evaluation:
            return min(AUTO_START, self._max_workers)
        needed = math.ceil(AUTO_MARGIN * len(self.executor.slots) * latency / evaluation)
        return max(1, min(self._max_workers, needed))

    def _start(self, task: Task) -> None:
        prune = None
        if task.kind == "child" and task.split == "val" and self.config.prune != "off":
            with self.lock:  # only children are ever pruned: never seeds, re-evaluations, tests
                prune = self.pruning.plan(task.parents, task.genome)
        request = EvalRequest(
            eval_id=task.id,
            source=self.archive.genome_source(task.genome),
            seed=task.seed,
            log_path=self.archive.log_path(task.id),
            split=task.split,
            prune=prune,
        )
        self._running[self.executor.submit(request)] = (task, request)

    # --- proposals ---------------------------------------------------------------------

    def _propose(self, index: int) -> Task:
        """Runs in a proposal thread: the index-th seed or child of the run."""
        gen = index // self.config.pop
        attempt = self._attempts[index]
        rng = random.Random(f"{self.config.rng_seed}:{index}" + (f":{attempt}" if attempt else ""))
        if index < self._seed_tasks:
            genome = self.seeds[index // self.config.noise_repeats]
            source = self.archive.genome_source(genome)
            task = self._task(gen, "seed", source, operator="seed", idea="seed genome")
        else:
            began = time.monotonic()
            child = self.proposer.child(
                rng, lambda name, exc: self._variation_failed(gen, name, exc)
            )
            self._propose_seconds.add(time.monotonic() - began)
            task = self._task(
                gen,
                "child",
                child.source,
                operator=child.operator,
                parents=list(child.parent_ids),
                idea=child.idea,
                meta=child.meta,
            )
        return task

    def _task(self, gen: int, kind: str, source: str, **fields: Any) -> Task:
        with self.lock:  # proposal threads share the archive writer
            genome = self.archive.put_genome(source)
            task_id = self.archive.new_eval_id()
        seed = zlib.crc32(f"{self.config.rng_seed}:{task_id}".encode())  # set by us, not the genome
        task = Task(id=task_id, gen=gen, kind=kind, genome=genome, seed=seed, **fields)
        self.pending.put(task)
        return task

    def _variation_failed(self, gen: int, operator: str, exc: VariationError) -> None:
        """Runs in a proposal thread: one operator could not make a child; another will try."""
        with self.lock:
            self._failed_ops.setdefault(gen, Counter())[operator] += 1
            self.state.failed_proposals += 1
        self.state.last_events.append(
            f"{operator} failed ({' '.join(str(exc).split())[:120]}); trying another operator"
        )

    def _take_proposal(self, future: Future) -> None:
        index = self._proposing.pop(future)
        try:
            task = future.result()
        except VariationError as exc:
            self._failed_rounds += 1
            self._attempts[index] += 1
            self._retry.append(index)  # no child for now: that place of the generation waits
            self.state.last_events.append(f"proposal {index} failed: {exc}")
            if self._failed_rounds > 20 * max(1, self.state.total):
                self.state.stop_reason = f"operators keep failing: {exc}"
                self.stop(hard=False)
            return
        self._ready.append(task)

    # --- results -------------------------------------------------------------------------

    def _take_result(self, future: Future) -> None:
        task, request = self._running.pop(future)
        result: EvalResult = future.result()
        if result.wall_seconds:
            self._eval_seconds.add(result.wall_seconds)
        if result.status.infrastructure:
            task.attempts.append(
                {
                    "status": result.status,
                    "reason": result.reason,
                    "slot": result.slot,
                    "at": time.time(),
                }
            )
            self.pending.put(task)
            lost_often = sum(a["status"] == "lost" for a in task.attempts) >= MAX_LOST
            if result.status == "interrupted" or self._hard_stop.is_set():
                return  # stays pending: resume reruns it
            if not lost_often:
                self._ready.appendleft(task)  # retry elsewhere, first in line
                return
        self._store(task, request.source, result)

    def _store(self, task: Task, source: str, result: EvalResult) -> None:
        if task.split != "val":  # what we asked for; a result claiming "test" stays sealed too
            result.split = task.split
        with self.lock:
            record = self.archive.add_evaluation(
                result,
                source,
                generation=task.gen,
                parents=task.parents,
                operator=task.operator,
                idea=task.idea,
                eval_id=task.id,
                prompt=task.meta.get("prompt"),
                response=task.meta.get("response"),
                origin=task.meta.get("origin"),
                target=task.meta.get("target"),
            )
        self.pending.done(task.id)
        self.strategy.observe(record)
        inserted = record.decision in (Decision.NEW_CELL.value, Decision.REPLACED.value)
        if task.kind == "child" and result.comparable and result.status != "lost":
            for parent in task.parents:  # re-evaluations and infrastructure say nothing of a parent
                self.proposer.curiosity.update(parent, inserted)
        state = self.state
        state.done += 1
        state.total += 1
        state.statuses[result.status] += 1
        state.gen = max(state.gen, task.gen)
        score = f"{result.val_bpb:.4f}" if result.val_bpb is not None else result.reason[:80]
        state.last_events.append(
            f"{task.id} {task.kind:<6} {result.status:<8} {score}  {task.idea[:60]}"
        )
        if result.split != "val":
            return  # reported only: no generation count, no noise, no new best
        self._per_gen[task.gen] += 1
        self._val_evals += 1
        self._filled[task.gen] += task.kind not in NOT_ISSUED
        if task.kind == "seed":
            self._update_noise()
        elif record.decision in OBSERVED:
            self._race(task.genome)
        self._test_best()

    def _race(self, genome: str) -> None:
        """Re-evaluate a close challenger, one evaluation at a time, until the noise gate decides
        (it wins or its mean is no longer lower) or it has `race` evaluations."""
        if self._stop.is_set() or self.config.race <= 1:
            return
        with self.lock:
            if not self.strategy.close_call(genome):
                return
            done = self.strategy.evaluations(genome)
        queued = sum(
            1
            for t in (*self._ready, *(t for t, _ in self._running.values()))
            if t.kind == "reeval" and genome in t.parents
        )
        if done + queued >= self.config.race:
            return
        self._ready.append(
            self._task(
                self.state.gen,
                "reeval",
                self.archive.genome_source(genome),
                operator="race",
                parents=[genome],
                idea=RACE_IDEA,
            )
        )

    def _update_noise(self) -> None:
        """Once the seed's repeats are in, adopt their spread as the run's noise level."""
        with self.lock:
            if self.config.noise_std is not None:
                noise = self.config.noise_std
            else:  # pooled variance of the seeds' in-class scores, kept by the elite map
                stats = [self.archive.elite_map.genomes.get(genome) for genome in self.seeds]
                variances = [s.std**2 for s in stats if s is not None and s.n >= 2]
                if not variances:
                    return
                noise = max(self.config.min_noise_std, math.sqrt(sum(variances) / len(variances)))
            if abs(self.archive.rule.noise_std - noise) > 1e-12:
                self.archive.set_noise_std(noise)
                self.strategy.set_rule(self.archive.rule)

    def _confirm_best(self) -> bool:
        """Queue re-evaluations of the best elite until it has `confirm` runs; True if queued."""
        with self.lock:
            best = self.strategy.best()  # the lowest mean, confirmed or not: it needs confirming
        if best is None:
            return False
        queued = [
            t
            for t in (*self._ready, *(t for t, _ in self._running.values()))
            if t.kind == "reeval" and best.genome in t.parents
        ]
        missing = self.config.confirm - best.n - len(queued)
        # a genome whose re-evaluations keep failing is not retried forever
        if missing <= 0 or self._reevals[best.genome] >= 2 * self.config.confirm:
            return self._test_best()
        self._reevals[best.genome] += missing
        source = self.archive.genome_source(best.genome)
        for _ in range(missing):
            self._ready.append(
                self._task(
                    self.state.gen,
                    "reeval",
                    source,
                    operator="reeval",
                    parents=[best.genome],
                    idea="re-evaluation of the best",
                )
            )
        return True

    def _test_best(self) -> bool:
        """Queue the sealed test-split evaluation of the confirmed best, once per genome.

        True if queued. A genome that becomes the confirmed best later gets its own.
        """
        with self.lock:
            best = self.strategy.confirmed(self.config.confirm)
        if best is None or best.genome in self._tested:
            return False
        self._tested.add(best.genome)
        task = self._task(
            self.state.gen,
            "test",
            self.archive.genome_source(best.genome),
            operator="test",
            parents=[best.genome],
            idea=TEST_IDEA,
            split="test",
        )
        self._ready.append(task)
        return True

    def _close_generations(self) -> None:
        """Write a generation's statistics once `pop` seeds or children of it are stored and
        nothing else of it is under way; failed variations are counted apart, by operator."""
        pop = self.config.pop
        outstanding = {t.gen for t in self._ready} | {t.gen for t, _ in self._running.values()}
        outstanding |= {index // pop for index in (*self._proposing.values(), *self._retry)}
        for gen in sorted(g for g, n in self._filled.items() if n >= pop):
            if gen in self._closed or gen in outstanding:
                continue
            with self.lock:
                failed = self._failed_ops.pop(gen, Counter())
                self.archive.record_generation(
                    gen,
                    self._per_gen[gen],
                    children=self._filled[gen],
                    failed_proposals=sum(failed.values()),
                    failed_by_operator=dict(failed),
                )
            self._closed.add(gen)
            if not self._stop.is_set():
                self._confirm_best()  # keep the reported best confirmed during long runs
