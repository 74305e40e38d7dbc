"""Evaluations as Ray tasks on an existing cluster; the archive stays on this machine.

Each slot is pinned to a node (one GPU per task when the cluster has GPUs, else
`threads` CPUs per task), so the executor knows which node ran what and that
node's hardware class. Every node is probed first: it must prepare the same
dataset (equal fingerprint) and run the same harness, and its class must match
the others unless mixing is allowed. A node that dies takes its slots with it;
its evaluations come back as `lost` (infrastructure, retried by the engine),
never as a bad genome. Nodes that join later are probed and added.

Every node needs evolve and torch installed (`pip install 'evolve[ray]'`). Named
datasets (builtin, tinystories, climbmix) are prepared by each node itself; a file
or folder must be at the same absolute path on every node (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, NodeDiedError, RayError, TaskUnschedulableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.executors import ray_worker
from evolve.executors.base import EvalRequest
from evolve.executors.pool import SlotExecutor
from evolve.executors.slots import Slot
from evolve.harness.data import Dataset
from evolve.record import EvalResult
from evolve.runner import RunSettings, sandbox

PROBE_TIMEOUT = 900.0  # a node may have to download and tokenize the dataset first
ANSWER_MARGIN = 300.0  # beyond budget + grace + evaluation, a silent task counts as lost
CANCEL_WAIT = 30.0  # seconds a cancelled task gets to stop its genome cleanly
WATCH_EVERY = 15.0  # seconds between looks for nodes that joined or died
MAX_NODE_LOSSES = 3  # consecutive lost evaluations after which a node is left out


class RayExecutor(SlotExecutor):
    """Runs each evaluation as a Ray task pinned to one slot of one node."""

    def __init__(
        self,
        dataset: Dataset,
        settings: RunSettings,
        address: str | None = None,
        *,
        data: str = RunConfig.data,
        device: str = RunConfig.device,
        threads: int | None = None,
        mixed: bool = False,
    ) -> None:
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _connect(address or "auto")
        self.settings = settings
        self.expect = ray_worker.Expect(
            _portable(data), dataset.tokenizer, dataset.fingerprint, sandbox.harness_hashes()
        )
        self._seen: set[str] = set()
        self._losses: dict[str, int] = {}
        notes: list[str] = []
        try:
            nodes = _alive_nodes()
            self.gpu = _use_gpus(device, nodes)
            self.threads = threads or _default_threads(nodes, self.gpu)
            slots = self._probe(nodes, notes)
            if not slots:
                raise UserError(
                    "no Ray node can run evaluations",
                    "; ".join(notes) or "the cluster has no node with a free CPU or GPU",
                    "add nodes to the cluster, check that every node has evolve "
                    "installed and the data reachable, or lower --threads",
                )
            super().__init__(slots, mixed)
        except BaseException:
            self._disconnect()
            raise
        self.notes += notes
        self.settings = dataclasses.replace(settings, device="cuda" if self.gpu else "cpu")
        self._task = ray.remote(ray_worker.evaluate)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="ray-watch", daemon=True)
        self._watcher.start()

    # --- slots -----------------------------------------------------------------------------

    def _probe(self, nodes: list[dict[str, Any]], notes: list[str]) -> list[Slot]:
        """Slots on the nodes that can take part; the others are noted with the reason."""
        refs = {}
        for node in nodes:
            self._seen.add(node["NodeID"])
            count, threads = self._shape(node)
            if count:
                remote = ray.remote(ray_worker.probe).options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                )
                gpus = int(_gpus(node)) if self.gpu else 0
                refs[node["NodeID"]] = (
                    node,
                    count,
                    threads,
                    remote.remote(self.expect, gpus, threads),
                )
        slots = []
        for node_id, (node, count, threads, ref) in refs.items():
            label = _label(node)
            try:
                answer = ray.get(ref, timeout=PROBE_TIMEOUT)
            except (RayError, GetTimeoutError) as exc:
                notes.append(f"Ray node {label} left out: its probe failed ({_first_line(exc)})")
                continue
            if answer["problem"]:
                notes.append(f"Ray node {label} left out: {answer['problem']}")
                continue
            memory = int(node["Resources"].get("memory", 0)) // count or None
            facts = {**answer["facts"], "node": node_id, "node_ip": node.get("NodeManagerAddress")}
            slots += [
                Slot(
                    f"ray:{label}:{i}",
                    "cuda" if self.gpu else "cpu",
                    None,
                    threads,
                    device_name=answer["device_name"],
                    facts=facts,
                    node=node_id,
                    mem_limit_bytes=memory,
                )
                for i in range(count)
            ]
        return slots

    def _shape(self, node: dict[str, Any]) -> tuple[int, int]:
        """How many slots a node holds, and the CPU threads each gets."""
        cpus = int(node["Resources"].get("CPU", 0))
        if self.gpu:
            gpus = int(_gpus(node))
            return gpus, max(1, min(self.threads, cpus // gpus if gpus else 1))
        return cpus // self.threads, self.threads

    def _watch(self) -> None:
        """Add nodes that joined (after probing them); retire nodes that died."""
        while not self._stop.wait(WATCH_EVERY):
            try:
                nodes = _alive_nodes()
            except RayError:
                continue
            alive = {node["NodeID"] for node in nodes}
            for node_id in {slot.node for slot in self._slots_now()} - alive:
                self._retire_node(node_id, "it is no longer alive")
            new = [node for node in nodes if node["NodeID"] not in self._seen]
            if new:
                notes: list[str] = []
                slots = self._probe(new, notes)
                slots, off = self._same_class(slots)
                self._add(slots)
                self.notes += notes + off

    def _same_class(self, slots: list[Slot]) -> tuple[list[Slot], list[str]]:
        if self.mixed:
            return slots, []
        keep = [slot for slot in slots if slot.hardware_class == self.hardware_class]
        off = [
            f"Ray slot {slot.name} left out: it is {slot.hardware_class}, the run is "
            f"{self.hardware_class}"
            for slot in slots
            if slot not in keep
        ]
        return keep, off

    def _slots_now(self) -> list[Slot]:
        with self._cond:
            return list(self._slots)

    def _retire_node(self, node_id: str | None, why: str) -> None:
        gone = self._retire(node_id)
        if gone:
            self.notes.append(f"Ray node {gone[0].name.rsplit(':', 1)[0]} left out: {why}")

    # --- one evaluation ------------------------------------------------------------------------

    def _evaluate(self, slot: Slot, request: EvalRequest) -> EvalResult:
        settings = dataclasses.replace(
            self.settings,
            seed=request.seed,
            slot=slot.name,
            device=slot.device,
            cuda_visible=None,
            threads=slot.threads,
            mem_limit_bytes=slot.mem_limit_bytes or self.settings.mem_limit_bytes,
            split=request.split,
            prune=request.prune,
        )
        ref = self._task.options(
            num_cpus=slot.threads,
            num_gpus=1 if slot.device == "cuda" else 0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node, soft=False),
        ).remote(request.source, settings, request.eval_id, self.expect)
        deadline = (
            time.monotonic()
            + settings.budget
            + settings.grace
            + settings.eval_timeout
            + ANSWER_MARGIN
        )
        while not ray.wait([ref], timeout=0.5)[0]:
            if request.cancel.is_set():
                return self._cancel(ref, slot, request)
            if time.monotonic() > deadline:
                ray.cancel(ref, force=True)
                return self._lost(slot, request, "no answer from the node in time")
        try:
            record, log = ray.get(ref)
        except RayError as exc:
            if isinstance(exc, (NodeDiedError, TaskUnschedulableError)):
                self._retire_node(slot.node, "the node died")
            return self._lost(slot, request, _first_line(exc))
        return self._received(slot, request, record, log)

    def _received(self, slot: Slot, request: EvalRequest, record: dict, log: str) -> EvalResult:
        _append(request.log_path, log)
        result = EvalResult.from_dict(record)
        result.log_path = str(request.log_path)
        if result.status == "lost":
            self._count_loss(slot, result.reason)
        else:
            self._losses[slot.node or ""] = 0
        return result

    def _cancel(self, ref: Any, slot: Slot, request: EvalRequest) -> EvalResult:
        """Ask the task to stop its genome (KeyboardInterrupt there); force it if it does not."""
        ray.cancel(ref)
        if ray.wait([ref], timeout=CANCEL_WAIT)[0]:
            try:
                return self._received(slot, request, *ray.get(ref))
            except RayError:
                pass
        else:
            ray.cancel(ref, force=True)
        return EvalResult(status="interrupted", reason="cancelled", log_path=str(request.log_path))

    def _lost(self, slot: Slot, request: EvalRequest, why: str) -> EvalResult:
        reason = f"lost to infrastructure on {slot.name}: {why}"
        _append(request.log_path, f"\n[evolve] {reason}\n")
        self._count_loss(slot, why)
        return EvalResult(status="lost", reason=reason, log_path=str(request.log_path))

    def _count_loss(self, slot: Slot, why: str) -> None:
        key = slot.node or ""
        self._losses[key] = self._losses.get(key, 0) + 1
        if self._losses[key] >= MAX_NODE_LOSSES:
            self._retire_node(
                slot.node, f"{MAX_NODE_LOSSES} evaluations in a row were lost ({why})"
            )

    def _close(self) -> None:
        self._stop.set()
        self._watcher.join()
        self._disconnect()

    def _disconnect(self) -> None:
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def _connect(address: str) -> None:
    fix = (
        "start one with `ray start --head` (and `ray start --address HEAD:6379` on each "
        "worker), then pass --ray-address HEAD:6379, or auto on a cluster node"
    )
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:  # Ray itself retries an unreachable address for minutes
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise UserError(f"cannot reach the Ray cluster at {address}", str(exc), fix) from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot connect to the Ray cluster at {address}", _first_line(exc), fix
        ) from None


def _alive_nodes() -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def _gpus(node: dict[str, Any]) -> float:
    return node["Resources"].get("GPU", 0)


def _use_gpus(device: str, nodes: list[dict[str, Any]]) -> bool:
    has = any(_gpus(node) >= 1 for node in nodes)
    if device == "cuda" and not has:
        raise UserError(
            "--device cuda was asked for, but the Ray cluster has no GPU",
            "no node reports a GPU resource",
            "use --device auto or cpu, or add GPU nodes",
        )
    return has and device != "cpu"


def _default_threads(nodes: list[dict[str, Any]], gpu: bool) -> int:
    """CPU tasks: every core of the smallest node, so all slots are alike. GPU tasks: set per node."""
    if gpu:
        return max((int(node["Resources"].get("CPU", 0)) for node in nodes), default=1) or 1
    return max(
        1,
        min(
            (
                int(node["Resources"].get("CPU", 0))
                for node in nodes
                if node["Resources"].get("CPU", 0) >= 1
            ),
            default=1,
        ),
    )


def _portable(data: str) -> str:
    """A local path becomes absolute, so a node looks for the same file (a shared filesystem)."""
    path = Path(data).expanduser()
    return str(path.resolve()) if path.exists() else data


def _label(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')}/{node['NodeID'][:6]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(text)
