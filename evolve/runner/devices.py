"""Which device a run uses, decided once by the host, never by the genome."""

from __future__ import annotations

from evolve.errors import UserError


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if cuda_count() else "cpu"
    if device == "cuda" and not cuda_count():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device",
                        "this machine has no GPU or torch is a CPU build",
                        "use --device cpu (or auto), or install a CUDA build of torch")
    return device
