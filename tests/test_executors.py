"""Local slots, hardware classes and the local executor, with real evaluations of a tiny genome."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evolve.config import RunConfig
from evolve.errors import UserError
from evolve.executors.base import EvalRequest
from evolve.executors.factory import build_executor
from evolve.executors.local import LocalExecutor
from evolve.executors.slots import Slot, gpu_slots, local_slots, run_class
from evolve.harness.data import Dataset, prepare
from evolve.runner import RunSettings
from evolve.runner.devices import cuda_count
from evolve.testkit.tiny import ROOT, tiny_genome

CORES = os.cpu_count() or 1
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"
# Prints the GPU pin it was given, then trains as usual.
PIN_PROBE = (
    "import os\nprint('pinned to', repr(os.environ.get('CUDA_VISIBLE_DEVICES')), flush=True)\n"
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return prepare("builtin", cache_dir=tmp_path_factory.mktemp("cache"))


def settings(**overrides: object) -> RunSettings:
    return RunSettings(**{"budget": 3.0, "grace": 5.0, "eval_tokens": 4096, **overrides})


# --- slots ---------------------------------------------------------------------------------


def test_default_is_one_cpu_slot_with_every_core() -> None:
    [slot] = local_slots("cpu", None, None)
    assert (slot.name, slot.device, slot.threads, slot.cuda_visible) == ("cpu0", "cpu", CORES, None)
    assert slot.hardware_class == f"cpu:{slot.device_name} x{CORES} threads"
    assert slot.facts["kind"] == "cpu" and slot.facts["torch_version"]


@pytest.mark.parametrize(
    "spec, count, threads",
    [
        ("cpu", 1, CORES),
        ("cpu:2", 2, max(1, CORES // 2)),
        ("cpu:2x1", 2, 1),
        ("cpu:3x2", 3, 2),
    ],
)
def test_cpu_slots_split_the_cores(spec: str, count: int, threads: int) -> None:
    slots = local_slots("cpu", spec, None)
    assert [s.name for s in slots] == [f"cpu{i}" for i in range(count)]
    assert {s.threads for s in slots} == {threads}
    assert len({s.hardware_class for s in slots}) == 1


def test_threads_flag_sets_the_threads_of_each_cpu_slot() -> None:
    assert {s.threads for s in local_slots("cpu", "cpu:2", 1)} == {1}


@pytest.mark.parametrize("spec", ["cpu:0", "cpu:x", "cpu:2x0", "cpux", "cpu:"])
def test_bad_cpu_spec_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match="bad --devices"):
        local_slots("cpu", spec, None)


def test_gpu_ids_on_a_cpu_run_are_a_user_error() -> None:
    with pytest.raises(UserError, match="names GPUs"):
        local_slots("cpu", "0,1", None)


@pytest.mark.skipif(cuda_count() > 0, reason="checks the error on a machine without a GPU")
def test_gpu_ids_that_do_not_exist_are_a_user_error() -> None:
    with pytest.raises(UserError, match="only 0 of them are visible"):
        gpu_slots(["0", "1"], 1)


@pytest.mark.skipif(cuda_count() == 0, reason="needs a real CUDA GPU")
def test_every_visible_gpu_gets_its_own_slot() -> None:
    slots = local_slots("cuda", None, None)
    assert len(slots) == cuda_count()
    assert len({s.cuda_visible for s in slots}) == len(slots)  # never two evaluations on one GPU
    assert all(s.hardware_class.startswith("cuda:NVIDIA") for s in slots)


def test_gpu_slot_class_is_the_gpu_model_and_mixing_is_refused() -> None:
    slots = [
        Slot("cuda:0", "cuda", "0", 8, device_name=H100),
        Slot("cuda:1", "cuda", "1", 8, device_name=H100),
        Slot("cuda:2", "cuda", "2", 8, device_name=A100),
    ]
    assert slots[0].hardware_class == f"cuda:{H100}"
    assert slots[0].facts["kind"] == "cuda" and slots[0].facts["device_count"] == 1
    assert run_class(slots[:2]) == f"cuda:{H100}"
    with pytest.raises(UserError, match="different hardware classes") as error:
        run_class(slots)
    assert "--mixed-hardware" in error.value.fix and "cuda:2" in error.value.why
    assert run_class(slots, mixed=True) == f"cuda:{H100}"  # the class most slots have


def test_cpu_slots_with_different_thread_counts_are_different_classes() -> None:
    slots = [Slot("cpu0", "cpu", None, 1), Slot("cpu1", "cpu", None, 2)]
    with pytest.raises(UserError, match="different hardware classes"):
        run_class(slots)


# --- the local executor ------------------------------------------------------------------------


def test_two_cpu_slots_run_two_evaluations_at_once_and_record_where(
    dataset: Dataset, tmp_path: Path
) -> None:
    """One slot is pinned to 'GPU 3': the pin reaches the genome, the other slot gets none."""
    slots = [Slot("cpu0", "cpu", None, 1), Slot("pin3", "cpu", "3", 1)]
    executor = LocalExecutor(dataset, settings(), slots, scratch=tmp_path / "scratch")
    source = PIN_PROBE + tiny_genome()
    seen: list[dict[str, str]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            seen.append(executor.busy())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        futures = [
            executor.submit(EvalRequest(f"e{i}", source, i, tmp_path / f"e{i}.log"))
            for i in range(2)
        ]
        results = [future.result(timeout=120) for future in futures]
    finally:
        watching.set()
        watcher.join()
        executor.shutdown()
    # scored, or failed as a genome (a loaded machine can push a 3 s budget over), never lost
    assert all(r.status in ("ok", "over_budget") for r in results), [r.reason for r in results]
    assert max(len(busy) for busy in seen) == 2  # both slots worked at once, never more
    assert {r.slot for r in results} == {"cpu0", "pin3"}
    for i, result in enumerate(results):
        log = Path(result.log_path).read_text()
        assert result.log_path == str(tmp_path / f"e{i}.log")
        assert ("pinned to '3'" in log) == (result.slot == "pin3"), log[:200]
        assert ("pinned to ''" in log) == (result.slot == "cpu0"), log[:200]
        hw = result.hardware
        assert hw["class"] == hw["run_class"] == executor.hardware_class == slots[0].hardware_class
        assert hw["kind"] == "cpu" and hw["threads"] == 1 and hw["torch_version"] and hw["host"]
        assert result.device == slots[0].device_name and result.torch_version == hw["torch_version"]
        assert result.comparable
    assert executor.slot_classes() == {
        "cpu0": executor.hardware_class,
        "pin3": executor.hardware_class,
    }
    assert not (tmp_path / "scratch").exists()


def test_off_class_results_are_flagged_when_mixing_is_allowed(
    dataset: Dataset, tmp_path: Path
) -> None:
    slots = [Slot("one", "cpu", None, 1), Slot("two", "cpu", None, 1), Slot("wide", "cpu", None, 2)]
    with pytest.raises(UserError, match="different hardware classes"):
        LocalExecutor(dataset, settings(), slots)
    executor = LocalExecutor(dataset, settings(), slots, mixed=True)
    assert executor.hardware_class == slots[0].hardware_class
    crash = "raise SystemExit(3)\n"  # fails fast: enough to see the stamp
    try:
        results = [
            f.result(timeout=120)
            for f in [
                executor.submit(EvalRequest(f"e{i}", crash, i, tmp_path / f"{i}.log"))
                for i in range(3)
            ]
        ]
    finally:
        executor.shutdown()
    assert all(r.status == "crashed" for r in results), [r.reason for r in results]
    flagged = {r.slot: not r.comparable for r in results}
    assert flagged == {"one": False, "two": False, "wide": True}
    wide = next(r for r in results if r.slot == "wide")
    assert wide.hardware["class"] == slots[2].hardware_class != wide.hardware["run_class"]


def test_cancelled_requests_come_back_interrupted(dataset: Dataset, tmp_path: Path) -> None:
    executor = LocalExecutor(dataset, settings(), [Slot("cpu0", "cpu", None, 1)])
    running = EvalRequest("run", tiny_genome(), 0, tmp_path / "run.log")
    queued = EvalRequest("queued", tiny_genome(), 1, tmp_path / "queued.log")
    first, second = executor.submit(running), executor.submit(queued)
    queued.cancel.set()
    result = second.result(timeout=30)
    assert (result.status, result.reason) == ("interrupted", "cancelled before it started")
    assert executor.busy() == {"cpu0": "run"}
    executor.shutdown()  # cancels the running one too; it still resolves to a record
    assert first.result(timeout=0).status in ("ok", "interrupted")


# --- Ray is optional ---------------------------------------------------------------------------

BLOCK_RAY = "import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"


def test_factory_without_ray_says_how_to_install_it(dataset: Dataset) -> None:
    code = BLOCK_RAY + (
        "from evolve.config import RunConfig\nfrom evolve.errors import UserError\n"
        "from evolve.executors.factory import build_executor\nfrom evolve.harness.data import prepare\n"
        f"dataset = prepare('builtin', cache_dir={str(dataset.train_path.parents[1])!r})\n"
        "try:\n    build_executor(RunConfig(executor='ray'), dataset)\n"
        "except UserError as exc:\n    print(exc.message())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--executor ray needs Ray" in done.stdout and "pip install 'evolve[ray]'" in done.stdout


def test_cli_without_ray_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text((ROOT / "train.py").read_text())
    code = BLOCK_RAY + "from evolve.cli import main\nmain()\n"
    env = {**os.environ, "EVOLVE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "start",
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:1",
            "--budget",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "needs Ray" in done.stderr and "pip install -e '.[ray]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "archive").exists()  # nothing was started


def test_build_executor_makes_local_slots_from_the_config(dataset: Dataset) -> None:
    executor, base = build_executor(RunConfig(device="cpu", devices="cpu:2x1", budget=5), dataset)
    try:
        assert executor.slots == ["cpu0", "cpu1"]
        assert base.device == "cpu" and base.budget == 5
        assert executor.hardware_class.endswith("x1 threads")
    finally:
        executor.shutdown()


def test_devices_with_the_ray_executor_is_a_user_error(dataset: Dataset) -> None:
    with pytest.raises(UserError, match="chooses slots on this machine"):
        build_executor(RunConfig(executor="ray", devices="cpu:2"), dataset)
