"""Do evaluation slots sit idle waiting for slow LLM proposals?

A local fake OpenAI server answers every request after `--latency` seconds
(10 s by default) with a fresh, valid child of the program in the prompt. The
real engine runs real CPU evaluations of a tiny genome under a short budget,
with LLM proposals prepared ahead of the slots: by `--concurrency` workers, or as
many as the engine finds it needs (the default, auto).

We log when each evaluation starts and ends and report the share of slot time,
from the first evaluation to the run's time limit, in which a slot had nothing
to run. Start-up (the first latency + one evaluation, when no LLM child can be
ready yet) is reported apart from the steady state. Target: < 2 % in the steady
state; the start-up's share of the whole shrinks as the run gets longer.

    python benchmarks/bench_llm_overlap.py [--slots 2 --concurrency N --duration 150]

Proposals keep up when concurrency >= slots * latency / evaluation time.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from evolve.config import RunConfig
from evolve.engine import start
from evolve.executors.factory import build_executor
from evolve.testkit.llm_server import FakeLLM, tweaker
from evolve.testkit.tiny import tiny_genome


class Timeline:
    """An executor wrapper that notes when each evaluation starts and ends."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.events: list[tuple[float, int]] = []
        self.walls: list[float] = []
        self._lock = threading.Lock()

    def submit(self, request):
        started = time.monotonic()
        with self._lock:
            self.events.append((started, +1))
        future = self.inner.submit(request)

        def done(_):
            with self._lock:
                now = time.monotonic()
                self.events.append((now, -1))
                self.walls.append(now - started)

        future.add_done_callback(done)
        return future

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # slots, hardware class, busy(), shutdown()...

    def idle(self, begin: float, end: float) -> float:
        """Slot-seconds without an evaluation in [begin, end]."""
        idle, running, last = 0.0, 0, begin
        for when, change in sorted(self.events) + [(end, 0)]:
            when = min(max(when, begin), end)
            idle += (len(self.slots) - running) * (when - last)
            running, last = running + change, when
        return idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None, help="[default: auto]")
    parser.add_argument("--duration", type=float, default=150.0, help="the run's --time-limit")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    (folder / "tiny.py").write_text(tiny_genome())
    timelines: list[Timeline] = []

    def executor_factory(config, dataset):
        executor, settings = build_executor(config, dataset)
        timelines.append(Timeline(executor))
        return timelines[-1], settings

    with FakeLLM(responder=tweaker(args.latency)) as fake:
        config = RunConfig(
            name="bench",
            archive_dir=str(folder),
            seed_genomes=[str(folder / "tiny.py")],
            pop=8,
            time_limit=args.duration,
            budget=args.budget,
            eval_tokens=4096,
            device="cpu",
            devices=f"cpu:{args.slots}",
            noise_repeats=2,
            confirm=1,
            operators={"llm_mutate": 1.0},
            llm={
                "models": [{"name": "fake", "price_in": 1.0, "price_out": 4.0}],
                "base_url": fake.url,
                "concurrency": args.concurrency,
                "timeout": 3 * args.latency,
            },
        ).validate()
        prepared = start(config, executor_factory)
        timeline = timelines[0]
        try:
            state = prepared.engine.run()
        finally:
            prepared.executor.shutdown()
            stats = prepared.engine.llm_stats()
            prepared.archive.close()

    first = min(t for t, change in timeline.events if change > 0)
    stop = state.started + args.duration
    slots = len(timeline.slots)
    wall = sum(timeline.walls) / len(timeline.walls)
    warmup_end = min(stop, first + args.latency + wall)
    total = timeline.idle(first, stop) / (slots * (stop - first))
    steady = timeline.idle(warmup_end, stop) / (slots * (stop - warmup_end))
    workers = prepared.engine.proposal_workers()
    print(
        f"slots {slots}, LLM latency {args.latency:g} s, concurrency "
        f"{args.concurrency or f'auto (at the end: {workers})'}, "
        f"budget {args.budget:g} s, time limit {args.duration:g} s"
    )
    print(
        f"evaluations {len(timeline.walls)} (mean wall {wall:.1f} s), LLM calls {stats['calls']}, "
        f"failures {stats['failures']}; proposals needed per slot-second {1 / wall:.3f}, "
        f"offered {workers / args.latency / slots:.3f}"
    )
    print(
        f"slot idle waiting for proposals: {total:.2%} of slot time overall, "
        f"{steady:.2%} after the first {warmup_end - first:.0f} s start-up "
        f"({'PASS' if steady < 0.02 else 'FAIL'}: target < 2 % in the steady state)"
    )


if __name__ == "__main__":
    main()
