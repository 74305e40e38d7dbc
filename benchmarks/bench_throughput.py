"""Evaluations per hour with 1 and 2 slots, on this machine and through Ray, at a short budget.

The tiny seed genome (train.py with 1 layer of width 32) is evaluated `--evals`
times per setup, all submitted at once; throughput is evaluations / wall time.
A warm-up first starts the zygote (once per process and slot environment, not per evaluation).
Slots get 1 thread each, so "2 slots" needs 2 free cores: the target is at least
0.95 x N times the 1-slot rate for N slots. Ray runs on a throwaway local cluster
(a head node, then a worker node, 1 CPU each) unless --ray-address names one.

    python benchmarks/bench_throughput.py [--budget 5] [--evals 6] [--rounds 1] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from evolve.executors.base import EvalRequest
from evolve.executors.local import LocalExecutor
from evolve.executors.slots import Slot
from evolve.harness.data import prepare
from evolve.runner import RunSettings
from evolve.runner.devices import cpu_name
from evolve.testkit.tiny import tiny_genome


def throughput(executor, evals: int, folder: Path, label: str) -> float:
    """Evaluations per hour; every record must be a genome's own (never lost)."""
    source = tiny_genome()
    start = time.monotonic()
    futures = [
        executor.submit(EvalRequest(f"{label}-{i}", source, i, folder / f"{label}-{i}.log"))
        for i in range(evals)
    ]
    results = [future.result() for future in futures]
    wall = time.monotonic() - start
    statuses = sorted({r.status for r in results})
    assert "lost" not in statuses and "interrupted" not in statuses, [r.reason for r in results]
    rate = evals / wall * 3600
    print(
        f"{label:<8} {len(executor.slots)} slot(s)  {evals} evals in {wall:6.1f} s  "
        f"{rate:7.0f} evals/h  statuses {','.join(statuses)}",
        flush=True,
    )
    for result in results:
        if not result.ok:
            print(f"  {result.status}: {result.reason[:200]}")
    return rate


def report(name: str, rate: float, base: float, slots: int) -> None:
    ratio = rate / base
    verdict = "meets" if ratio >= 0.95 * slots else "misses"
    print(f"  {name}: {ratio:.2f} x the 1-slot rate ({verdict} the target {0.95 * slots:.2f})")


class LocalCluster:
    """A Ray head and worker nodes on this machine, each in a session of its own."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{sock.getsockname()[1]}"
        self.sessions = [
            self._start(
                [
                    "--head",
                    f"--port={self.address.split(':')[1]}",
                    "--include-dashboard=false",
                    f"--temp-dir={self.base}",
                ]
            )
        ]

    def add_worker(self) -> None:
        self.sessions.append(self._start(["--address", self.address]))

    def _start(self, args: list[str]) -> int:
        proc = subprocess.Popen(
            [
                "ray",
                "start",
                *args,
                "--num-cpus=1",
                "--node-ip-address=127.0.0.1",
                "--disable-usage-stats",
            ],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = proc.communicate(timeout=180)[0]
        if proc.returncode:
            raise RuntimeError(out)
        return proc.pid

    def stop(self) -> None:
        """Kill the processes of our sessions only (`ray stop` would stop every Ray here)."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) in self.sessions:
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--evals", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="local measurements, interleaved")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument(
        "--ray-address", default=None, help="an existing cluster instead of a local one"
    )
    args = parser.parse_args()
    import torch

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"budget {args.budget:g} s, {args.evals} evaluations per setup, 1 thread per slot\n")
    dataset = prepare("builtin")
    settings = RunSettings(budget=args.budget, eval_tokens=4096)
    folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    rates = {}
    try:
        # Page cache, .pyc files, and the slots' zygote: started once per run (about 2 s),
        # so not part of the steady-state rate.
        warm = LocalExecutor(dataset, settings, [Slot(f"cpu{i}", "cpu", None, 1) for i in range(2)])
        throughput(warm, 2, folder, "warm-up")
        warm.shutdown()
        for _ in range(args.rounds):  # interleaved, so a change in machine load hits both
            for slots in (1, 2):
                executor = LocalExecutor(
                    dataset, settings, [Slot(f"cpu{i}", "cpu", None, 1) for i in range(slots)]
                )
                rate = throughput(executor, args.evals, folder, f"local-{slots}")
                rates[f"local-{slots}"] = rates.get(f"local-{slots}", 0.0) + rate / args.rounds
                executor.shutdown()
        if not args.no_ray:
            rates.update(ray_rates(args, dataset, settings, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    report("local, 2 slots", rates["local-2"], rates["local-1"], 2)
    for name in ("ray-1", "ray-2"):
        if name in rates:
            report(f"Ray, {name[-1]} slot(s)", rates[name], rates["local-1"], int(name[-1]))


def ray_rates(
    args: argparse.Namespace, dataset, settings: RunSettings, folder: Path
) -> dict[str, float]:
    from evolve.executors.ray import RayExecutor

    if args.ray_address:
        executor = RayExecutor(dataset, settings, args.ray_address, threads=1)
        rate = throughput(executor, args.evals, folder, "ray")
        executor.shutdown()
        return {f"ray-{len(executor.slots)}": rate}
    cluster = LocalCluster()
    rates = {}
    try:
        for slots in (1, 2):
            if slots == 2:
                cluster.add_worker()
            executor = RayExecutor(dataset, settings, cluster.address, threads=1)
            assert len(executor.slots) == slots, executor.slots
            throughput(executor, slots, folder, f"warm-up-{slots}")  # the Ray workers' zygotes
            rates[f"ray-{slots}"] = throughput(executor, args.evals, folder, f"ray-{slots}")
            executor.shutdown()
    finally:
        cluster.stop()
    return rates


if __name__ == "__main__":
    main()
