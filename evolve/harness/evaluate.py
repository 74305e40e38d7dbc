"""The trusted evaluator, forked from the slot's zygote (or `python -m evolve.harness.evaluate`).

Runs in its own sandboxed process that never imports genome code. It loads the
exported graph the genome handed in, checks that it is causal, and computes
val_bpb on the first `eval_tokens` targets of the held-out split: the same
tokens for every genome, whatever its batch size or context length.

The model file is hostile input: only what a plain `torch.export.save` writes
gets through `vet.vet_archive`, and only ATen operators get through `check_graph`.
The verdict goes to a pipe of its own, not to stdout, which is just a log.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import numpy as np

from evolve.harness import landlock, limits
from evolve.harness.vet import Rejected, vet_archive

ENV_VAR = "EVOLVE_EVAL"
_HOPS = {"wrap_with_autocast", "wrap_with_set_grad_enabled"}
CAUSAL_TOL = 1e-3  # nats; a causal model changes by exactly 0 on CPU


def load_model(path: str) -> Any:
    """The vetted, loaded and checked ExportedProgram at `path`, or Rejected."""
    import torch

    archive = vet_archive(path)
    try:
        program = torch.export.load(archive)
    except Exception as exc:
        raise Rejected(f"the handed-in model could not be loaded: {type(exc).__name__}: "
                       f"{str(exc)[:300]}") from exc
    check_graph(program)
    return program


def check_graph(program: Any) -> None:
    """Only ATen/prims operators (and autocast/grad-mode wrappers) may run in the evaluator."""
    import operator

    import torch

    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            target = node.target
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op == "call_function" and (
                    target is operator.getitem
                    or isinstance(target, torch._ops.OpOverload) and target.namespace in ("aten", "prims")
                    or isinstance(target, torch._ops.HigherOrderOperator) and target.name() in _HOPS):
                continue
            raise Rejected(f"the exported graph calls {target!r} ({node.op}), which is not an ATen "
                           "operator; refused")


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
    if not hasattr(logits, "shape") or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape) \
            or logits.shape[2] < vocab:
        shape = tuple(getattr(logits, "shape", ()))
        raise Rejected(f"model output has shape {shape}; expected {tuple(x.shape)} + (>= {vocab},)")
    logits = logits[..., :vocab].float()
    if not bool(logits.isfinite().all()):
        raise Rejected("the model's logits are not finite (NaN or inf): training diverged")
    return logits


def _logprobs(module: Any, x: Any, vocab: int) -> Any:
    return _forward(module, x, vocab).log_softmax(-1).clamp(min=-30.0)


def check_causal(module: Any, x: Any, vocab: int) -> None:
    """Reject models whose predictions at position t depend on tokens after t or on other rows.

    Compared as log-probabilities (what the loss sees), so inflating logits cannot
    widen the tolerance. The replacement tokens are real text from elsewhere in
    the batch, so a model cannot spot the probe by its randomness; several cuts,
    so a model cannot be causal in its first half only.
    """
    base = _logprobs(module, x, vocab)
    rows, length = x.shape
    donor = x.roll(shifts=(1, max(1, length // 3)), dims=(0, 1))
    for cut in sorted({1, length // 4, length // 2, 3 * length // 4, length - 1}):
        if not 0 < cut < length:
            continue
        probe = x.clone()
        probe[:, cut:] = donor[:, cut:]
        diff = float((_logprobs(module, probe, vocab)[:, :cut] - base[:, :cut]).abs().max())
        if diff > CAUSAL_TOL:
            raise Rejected(f"non-causal model: changing the tokens from position {cut} on changed "
                           f"the predictions before it by {diff:.3g} nats (tolerance {CAUSAL_TOL:g})")
    if rows > 1:
        probe = x.clone()
        probe[1:] = donor[1:]
        diff = float((_logprobs(module, probe, vocab)[0] - base[0]).abs().max())
        if diff > CAUSAL_TOL:
            raise Rejected(f"model mixes information across the batch: changing other rows "
                           f"changed row 0's predictions by {diff:.3g} nats")


def score(request: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Load the exported model and return val_bpb and the parameter count."""
    import torch
    import torch.nn.functional as F

    device, vocab = config["device"], int(config["vocab_size"])
    seq_len, batch = request.get("seq_len"), int(config["export_batch"])
    if not isinstance(seq_len, int) or not 0 < seq_len <= 1 << 20:
        raise Rejected(f"seq_len {seq_len!r} is not a positive whole number of tokens")
    program = load_model(request["model"])
    module = program.module()
    params = sum(int(program.state_dict[name].numel())
                 for name in program.graph_signature.parameters if name in program.state_dict)
    n_targets = int(config["eval_tokens"])
    val = np.load(config["val_path"], mmap_mode="r")
    if len(val) < n_targets + 1:
        raise Rejected(f"validation split has {len(val)} tokens; eval_tokens is {n_targets}")
    x, y, mask = _windows(val, n_targets, seq_len)
    token_bytes = None
    if config.get("token_bytes_path"):
        token_bytes = torch.from_numpy(np.load(config["token_bytes_path"]).astype(np.int64)).to(device)
    total_nats, total_bytes = 0.0, 0
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            rows = torch.arange(start, min(start + batch, x.shape[0]))
            padded = torch.cat([rows, rows.new_zeros(batch - len(rows))])  # fixed export shape
            xb, yb = x[padded].to(device), y[padded].to(device)
            mb = mask[padded].to(device)
            mb[len(rows):] = False
            if start == 0:
                check_causal(module, xb, vocab)
            logits = _forward(module, xb, vocab)
            nats = F.cross_entropy(logits.reshape(-1, vocab), yb.reshape(-1), reduction="none")
            total_nats += float((nats * mb.reshape(-1)).sum())
            if token_bytes is None:
                total_bytes += int(mb.sum())
            else:
                total_bytes += int((token_bytes[yb] * mb).sum())
    return {"val_bpb": total_nats / math.log(2) / total_bytes, "params": params,
            "eval_tokens": n_targets}


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


def main() -> None:
    config = json.loads(os.environ[ENV_VAR])
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # no pickled code, whatever torch asks for
    verdict = int(config["verdict_fd"])
    limits.set_rlimits(config.get("mem_limit"), None, int(config["max_file_bytes"]))
    import torch
    import torch._export.serde.serialize  # noqa: F401 - before the sandbox closes (a zygote
    import torch.export  # noqa: F401 - has imported both already)

    torch.set_num_threads(int(config["threads"]))
    read = landlock.python_read_paths() + [config["val_path"], config["model_dir"]]
    if config.get("token_bytes_path"):
        read.append(config["token_bytes_path"])
    landlock.restrict(read, [os.getcwd()], landlock.device_paths())
    limits.drop_capabilities()
    reply: dict[str, Any] = device_facts(config["device"])
    line = sys.stdin.readline()
    if line.strip():  # an empty line: the genome handed nothing in; report the facts only
        try:
            reply.update(status="ok", **score(json.loads(line), config))
        except Rejected as exc:
            reply.update(status="invalid", reason=str(exc))
        except Exception as exc:  # a model that breaks evaluation is the genome's fault
            reply.update(status="invalid",
                         reason=f"evaluation failed: {type(exc).__name__}: {str(exc)[:300]}")
    os.write(verdict, (json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    main()
