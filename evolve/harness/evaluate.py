"""The trusted evaluator: `python -m evolve.harness.evaluate`.

Runs in its own sandboxed process that never imports genome code. It loads the
exported graph the genome handed in, checks that it is causal, and computes
val_bpb on the first `eval_tokens` targets of the held-out split: the same
tokens for every genome, whatever its batch size or context length.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import numpy as np

from evolve.harness import landlock, limits

ENV_VAR = "EVOLVE_EVAL"


class Rejected(Exception):
    """The model cannot be scored: the reason goes into the record as `invalid`."""


def _windows(val: np.ndarray, n_targets: int, seq_len: int) -> tuple[Any, Any, Any]:
    """Non-overlapping (x, y, mask) windows that cover exactly `n_targets` targets."""
    import torch

    count = math.ceil(n_targets / seq_len)
    need = count * seq_len + 1
    tokens = np.zeros(need, dtype=np.int64)
    take = min(need, len(val))
    tokens[:take] = val[:take]
    tokens = torch.from_numpy(tokens)
    x = torch.stack([tokens[i * seq_len:(i + 1) * seq_len] for i in range(count)])
    y = torch.stack([tokens[i * seq_len + 1:(i + 1) * seq_len + 1] for i in range(count)])
    mask = (torch.arange(count * seq_len) < n_targets).view(count, seq_len)
    return x, y, mask


def _forward(module: Any, x: Any, vocab: int) -> Any:
    logits = module(x)
    if not hasattr(logits, "shape") or tuple(logits.shape[:2]) != tuple(x.shape) \
            or logits.dim() != 3 or logits.shape[2] < vocab:
        shape = tuple(getattr(logits, "shape", ()))
        raise Rejected(f"model output has shape {shape}; expected {tuple(x.shape)} + (>= {vocab},)")
    logits = logits[..., :vocab].float()
    if not bool(logits.isfinite().all()):
        raise Rejected("the model's logits are not finite (NaN or inf): training diverged")
    return logits


def check_causal(module: Any, x: Any, vocab: int, generator: Any) -> None:
    """Reject models whose logits at position t depend on tokens after t or on other rows."""
    import torch

    base = _forward(module, x, vocab)
    tol = 1e-3 * float(base.abs().max()) + 1e-4
    cut = x.shape[1] // 2
    later = x.clone()
    later[:, cut:] = torch.randint(0, vocab, later[:, cut:].shape, generator=generator).to(x.device)
    diff = float((_forward(module, later, vocab)[:, :cut] - base[:, :cut]).abs().max())
    if diff > tol:
        raise Rejected(f"non-causal model: changing tokens after position {cut} changed earlier "
                       f"logits by {diff:.3g} (tolerance {tol:.2g})")
    if x.shape[0] > 1:
        others = x.clone()
        others[1:] = torch.randint(0, vocab, others[1:].shape, generator=generator).to(x.device)
        diff = float((_forward(module, others, vocab)[0] - base[0]).abs().max())
        if diff > tol:
            raise Rejected(f"model mixes information across the batch: changing other rows "
                           f"changed row 0's logits by {diff:.3g}")


def score(request: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Load the exported model and return val_bpb, parameter count and device facts."""
    import torch
    import torch.nn.functional as F

    device, vocab = config["device"], int(config["vocab_size"])
    try:
        program = torch.export.load(request["model"])
        module = program.module()
    except Exception as exc:
        raise Rejected(f"the handed-in model could not be loaded: {exc}") from exc
    params = sum(int(program.state_dict[name].numel())
                 for name in program.graph_signature.parameters if name in program.state_dict)
    seq_len, batch = int(request["seq_len"]), int(config["export_batch"])
    n_targets = int(config["eval_tokens"])
    val = np.load(config["val_path"], mmap_mode="r")
    if len(val) < n_targets + 1:
        raise Rejected(f"validation split has {len(val)} tokens; eval_tokens is {n_targets}")
    x, y, mask = _windows(val, n_targets, seq_len)
    token_bytes = None
    if config.get("token_bytes_path"):
        token_bytes = torch.from_numpy(np.load(config["token_bytes_path"]).astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    total_nats, total_bytes = 0.0, 0
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            rows = torch.arange(start, min(start + batch, x.shape[0]))
            padded = torch.cat([rows, rows.new_zeros(batch - len(rows))])  # fixed export shape
            xb, yb = x[padded].to(device), y[padded].to(device)
            mb = mask[padded].to(device)
            mb[len(rows):] = False
            if start == 0:
                check_causal(module, xb, vocab, generator)
            logits = _forward(module, xb, vocab)
            nats = F.cross_entropy(logits.reshape(-1, vocab), yb.reshape(-1), reduction="none")
            total_nats += float((nats * mb.reshape(-1)).sum())
            if token_bytes is None:
                total_bytes += int(mb.sum())
            else:
                total_bytes += int((token_bytes.to(device)[yb] * mb).sum())
    return {"val_bpb": total_nats / math.log(2) / total_bytes, "params": params,
            "eval_tokens": n_targets}


def device_facts(device: str) -> dict[str, Any]:
    import platform

    import torch

    facts = {"torch_version": torch.__version__, "device_name": platform.processor() or "cpu"}
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
        facts["device_count"] = torch.cuda.device_count()
    else:
        facts["device_name"] = _cpu_name()
        facts["threads"] = torch.get_num_threads()
    return facts


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def main() -> None:
    config = json.loads(os.environ[ENV_VAR])
    import torch

    torch.set_num_threads(int(config["threads"]))
    read = landlock.python_read_paths() + [config["val_path"], config["model_dir"]]
    if config.get("token_bytes_path"):
        read.append(config["token_bytes_path"])
    landlock.restrict(read, [os.getcwd()], landlock.device_paths())
    limits.drop_capabilities()
    facts = device_facts(config["device"])
    line = sys.stdin.readline()
    if not line.strip():
        return  # the genome handed nothing in; the runner closed our stdin
    try:
        reply = {"status": "ok", **score(json.loads(line), config)}
    except Rejected as exc:
        reply = {"status": "invalid", "reason": str(exc)}
    except Exception as exc:  # a model that breaks evaluation is the genome's fault
        reply = {"status": "invalid", "reason": f"evaluation failed: {type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps({**facts, **reply}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
