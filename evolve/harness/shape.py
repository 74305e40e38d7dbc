"""Trusted shape measurements of an exported model, for behaviour descriptors.

Counted by harness code from the graph the evaluator scores, never reported by the
genome: the context length of its input, and the multiply-accumulates per token of its
forward pass (matrix products and attention), a measure of compute that, unlike
parameters, also sees context length, weight sharing and recurrence.

Pure functions of a `torch.export.ExportedProgram` whose first user input is int64 (B, T).
"""

from __future__ import annotations

import math
from typing import Any

_MATMULS = ("mm", "bmm", "matmul", "addmm", "baddbmm", "linear")
_ATTENTION = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


def _shape(node: Any) -> tuple[int, ...] | None:
    value = getattr(node, "meta", {}).get("val")
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):  # symbolic sizes: not measurable here
        return None


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _macs(node: Any) -> int:
    """Multiply-accumulates of one call in the graph (0 for anything but products)."""
    name = _op_name(node.target)
    args = [a for a in node.args if hasattr(a, "meta")]
    out = _shape(node)
    if name in _ATTENTION and len(args) >= 3:
        q, k = _shape(args[0]), _shape(args[1])
        if q is None or k is None:
            return 0
        # Q K^T and the weighted sum of V: 2 x batch x heads x T_q x T_k x head dim
        return 2 * math.prod(q[:-1]) * k[-2] * q[-1]
    if name not in _MATMULS or out is None:
        return 0
    if name == "linear":
        inner = _shape(args[0])
        return math.prod(out) * inner[-1] if inner else 0
    operands = args[-2:]  # addmm/baddbmm: (bias, a, b)
    left = _shape(operands[0]) if operands else None
    return math.prod(out) * left[-1] if left else 0


def graph_shape(program: Any) -> dict[str, int | float | None]:
    """{"context": T of the input, "macs_per_token": forward multiply-accumulates per token}."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = set(program.graph_signature.user_inputs)
    tokens = next((_shape(n) for n in inputs if n.name in user), None)
    context = tokens[-1] if tokens and len(tokens) >= 2 else None
    count = math.prod(tokens) if tokens else 0
    macs = sum(_macs(n) for n in program.graph.nodes if n.op == "call_function")
    return {"context": context, "macs_per_token": macs / count if count else None}
