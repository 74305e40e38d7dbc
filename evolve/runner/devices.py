"""Which device a run uses, decided once by the host, never by the genome.

Also the hardware facts recorded with every evaluation, and the hardware
"class" of a slot: results are only compared between slots of the same class,
because a genome's val_bpb after a fixed time budget depends on the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

from evolve.errors import UserError
from evolve.harness.evaluate import cpu_name  # noqa: F401  (re-exported: one definition)

# Lists the GPUs a process sees, in a child so that this process never creates a CUDA context.
_CUDA_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps([torch.cuda.get_device_name(i) for i in range(n)]))"
)


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if cuda_count() else "cpu"
    if device == "cuda" and not cuda_count():
        raise UserError(
            "--device cuda was asked for, but torch sees no CUDA device",
            "this machine has no GPU or torch is a CPU build",
            "use --device cpu (or auto), or install a CUDA build of torch",
        )
    return device


def visible_gpu_ids() -> list[str]:
    """The ids to put in CUDA_VISIBLE_DEVICES for each GPU this process may use.

    When our own CUDA_VISIBLE_DEVICES restricts us (e.g. "2,3"), those ids, not 0..n-1:
    a child given "0" would otherwise land on a GPU we were not given.
    """
    own = os.environ.get("CUDA_VISIBLE_DEVICES")
    if own is not None:
        return [part.strip() for part in own.split(",") if part.strip()][: cuda_count()]
    return [str(i) for i in range(cuda_count())]


def cuda_names(visible: str | None) -> list[str]:
    """Names of the GPUs a child sees with CUDA_VISIBLE_DEVICES=visible (None: unset, all GPUs)."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run(
        [sys.executable, "-c", _CUDA_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise UserError(
            "cannot list the GPUs",
            done.stderr.strip()[-500:],
            "check that a CUDA build of torch works: python -c 'import torch; "
            "print(torch.cuda.is_available())'",
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def hardware_facts(device: str, device_name: str, threads: int) -> dict[str, Any]:
    """The fingerprint of one slot: what a record needs to say where it ran."""
    cuda_version = None
    if device == "cuda":
        import torch

        cuda_version = torch.version.cuda
    return {
        "kind": device,
        "device_name": device_name,
        "device_count": 1 if device == "cuda" else 0,
        "threads": threads,
        "torch_version": _torch_version(),
        "cuda_version": cuda_version,
        "host": platform.node(),
    }


def _torch_version() -> str:
    """Without importing torch (seconds), which a CPU slot's facts do not need."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        return torch.__version__


def hardware_class(device: str, device_name: str, threads: int) -> str:
    """Slots of one class give comparable scores: same GPU model, or same CPU and thread count."""
    if device == "cuda":
        return f"cuda:{device_name}"
    return f"cpu:{device_name} x{threads} threads"
