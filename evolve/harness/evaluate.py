"""The trusted evaluator, forked from the slot's zygote (or `python -m evolve.harness.evaluate`).

Runs in its own sandboxed process that never imports genome code, in three steps:

1. Read everything it will need while it still can: the request (model path,
   seq_len, and a secret the runner drew for this evaluation), the vetted model
   archive, and the held-out windows, drawn at secret stratified offsets from a
   pool far larger than a genome can carry, with the causality probes' secret
   cuts and replacement text. Then load and run a tiny trusted exported program,
   so that every lazy import of torch's load and run paths has happened.
2. Seal itself: on CPU, Landlock grants nothing readable or writable, so the
   genome's graph, which runs next, can open no file; on CUDA, only the GPU nodes
   and the libraries CUDA may load late (never the data, its sources, the model).
3. Load the genome's graph, refuse it unless it calls only allowlisted pure
   tensor operators (`evolve.harness.operators`) and keeps no state between
   calls, and score it. Every scored batch is probed once more for causality.

The verdict goes to a pipe of its own, not to stdout, which is just a log.
The rules for graphs are in `graph_rules`, the secret windows in `windows`, the
scoring and causality probe in `scoring`; this module sequences them.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.harness import landlock, limits, syscalls
from evolve.harness.graph_rules import count_params, load_model
from evolve.harness.scoring import score_batches
from evolve.harness.settings import EvaluatorSettings
from evolve.harness.shape import graph_shape
from evolve.harness.vet import Rejected, vet_archive
from evolve.harness.windows import Batch, plan

SECRET_HEX = 64  # the runner's per-evaluation secret: 32 random bytes, hex


# ---------------------------------------------------------------------------
# Before the seal: everything read, every lazy import done


@dataclass
class Prepared:
    archive: io.BytesIO  # the vetted model archive, in memory
    batches: list[Batch]
    token_bytes: Any  # int64 bytes per token id on the device, or None (1 byte each)


def prepare(request: dict[str, Any], config: EvaluatorSettings) -> Prepared:
    """Read the model and the held-out windows while files can still be opened."""
    import torch

    seq_len, device = request.get("seq_len"), config.device
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 0 < seq_len <= 1 << 20:
        raise Rejected(f"seq_len {seq_len!r} is not a positive whole number of tokens")
    archive = vet_archive(request["model"])
    pool = np.load(config.heldout_path, mmap_mode="r")
    rng = np.random.default_rng(np.random.SeedSequence(int(_secret(request), 16)))
    batches = plan(pool, config.eval_tokens, seq_len, config.export_batch, rng, device)
    token_bytes = None
    if config.token_bytes_path:
        token_bytes = torch.from_numpy(np.load(config.token_bytes_path).astype(np.int64)).to(device)
    return Prepared(archive, batches, token_bytes)


def _secret(request: dict[str, Any]) -> str:
    """The runner's secret for this evaluation; drawn here when run by hand without one."""
    secret = request.get("secret")
    if isinstance(secret, str) and len(secret) >= SECRET_HEX // 2:
        try:
            int(secret, 16)
            return secret
        except ValueError:
            pass
    return secrets.token_hex(SECRET_HEX // 2)


def _trusted_program(device: str) -> io.BytesIO:
    """A tiny model with the usual parts (attention, norms, rotary-style slicing, a causal
    convolution, soft-capped logits, bf16 autocast), exported and saved as a genome's would be."""
    import torch
    import torch.nn.functional as F

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.qkv = torch.nn.Linear(8, 24, bias=False)
            self.head = torch.nn.Linear(8, 16)
            self.conv = torch.nn.Conv1d(8, 8, 2, groups=8)  # on CUDA: cuDNN loads here
            self.register_buffer("angle", torch.linspace(0, 1, 4)[:, None].expand(4, 2).clone())

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            with torch.autocast(idx.device.type, dtype=torch.bfloat16):
                x = self.norm(self.embed(idx))
                q, k, v = (
                    self.qkv(F.rms_norm(x, (8,)))
                    .view(*idx.shape, 3, 2, 4)
                    .transpose(1, 3)
                    .unbind(2)
                )
                q = torch.cat(
                    [
                        q[..., :2] * self.angle.cos() - q[..., 2:] * self.angle.sin(),
                        q[..., 2:] * self.angle.cos() + q[..., :2] * self.angle.sin(),
                    ],
                    -1,
                )
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + F.gelu(y.transpose(1, 2).reshape(*idx.shape, 8))
                x = x + self.conv(F.pad(x.transpose(1, 2), (1, 0))).transpose(1, 2)
                logits = self.head(x).float()
            return 15.0 * torch.tanh(logits / 15.0)

    model = Tiny().to(device).eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.zeros(2, 4, dtype=torch.long, device=device),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer


def warm(device: str) -> None:
    """Load, check and score a trusted program on the device: every lazy import of those paths
    (and, on CUDA, the libraries that load on first use) happens before the seal."""
    import torch

    with open(os.devnull, "rb"):  # the first open of a file, too
        pass
    archive = io.BytesIO(_trusted_program(device).getvalue())
    program = load_model(archive)
    pool = np.arange(64, dtype=np.uint8) % 16
    batches = plan(pool, 16, 4, 2, np.random.default_rng(0), device)
    score_batches(program.module(), batches, 16, torch.ones(16, dtype=torch.long, device=device))
    count_params(program)


def seal(device: str, sealed: list[str] | tuple[str, ...] = ()) -> int:
    """From here on this process can open no file.

    On CUDA, the GPU device nodes stay open, and so do the system and Python
    libraries, minus `sealed` (the held-out text and its sources): CUDA loads some
    libraries only when an operator first needs them (cuDNN engines, NVRTC), which
    no warm-up can cover for every graph. The data cache and the model stay closed.
    """
    if not device.startswith("cuda"):
        return landlock.restrict([], [])
    return landlock.restrict(landlock.python_read_paths(), [], landlock.device_paths(), sealed)


# ---------------------------------------------------------------------------
# After the seal


def score(prepared: Prepared, config: EvaluatorSettings) -> dict[str, Any]:
    """Load the handed-in graph from memory and return val_bpb and the parameter count."""
    program = load_model(prepared.archive)
    nats, n_bytes = score_batches(
        program.module(), prepared.batches, config.vocab_size, prepared.token_bytes
    )
    return {
        "val_bpb": nats / math.log(2) / n_bytes,
        "params": count_params(program),
        "eval_tokens": config.eval_tokens,
        **graph_shape(program),
    }


def device_facts(device: str) -> dict[str, Any]:
    import torch

    facts = {"torch_version": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
        facts["device_count"] = torch.cuda.device_count()
        facts["memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    else:
        facts["device_name"] = cpu_name()
        facts["threads"] = torch.get_num_threads()
        facts["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return facts


def cpu_name() -> str:
    """The CPU model, as the kernel names it: part of a slot's hardware fingerprint."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def _invalid(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, Rejected):
        return {"status": "invalid", "reason": str(exc)}
    # a model that breaks evaluation is the genome's fault
    return {
        "status": "invalid",
        "reason": f"evaluation failed: {type(exc).__name__}: {str(exc)[:300]}",
    }


def main() -> None:
    config = EvaluatorSettings.from_env()
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # no pickled code, whatever torch asks for
    verdict = config.verdict_fd
    limits.set_rlimits(config.mem_limit, None, config.max_file_bytes)
    import torch
    import torch._export.serde.serialize  # noqa: F401 - a zygote has imported both already
    import torch.export  # noqa: F401

    torch.set_num_threads(config.threads)
    device = config.device
    line = sys.stdin.readline()  # the request, with the secret: read before anything else runs
    reply: dict[str, Any] = {**device_facts(device), "split": config.split}
    prepared = None
    if line.strip():  # an empty line: the genome handed nothing in; report the facts only
        try:
            prepared = prepare(json.loads(line), config)
        except Exception as exc:
            reply.update(_invalid(exc))
    if prepared is not None:
        warm(device)
    abi = seal(device, [*config.sealed, config.heldout_path])
    no_sockets = syscalls.deny_sockets()
    limits.drop_capabilities()
    reply["layers"] = [*([f"landlock-v{abi}"] if abi else []), *(["seccomp"] if no_sockets else [])]
    if prepared is not None:
        try:
            reply.update(status="ok", **score(prepared, config))
        except Exception as exc:
            reply.update(_invalid(exc))
    os.write(verdict, (json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    main()
