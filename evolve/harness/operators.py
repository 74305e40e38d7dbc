"""Which operators a handed-in graph may call in the evaluator: an allowlist of pure tensor ops.

The exported graph is code written by the genome, and it runs in the process
that holds the held-out windows. Any ATen operator would be too many: ATen can
read files (`from_file`), draw from the global random state, hand out
uninitialised memory (which may hold earlier batches' tokens), write into its
inputs, or abort the process. So only operators that compute a fresh tensor
from their inputs, and nothing else, are allowed, by overload packet name
(`aten.add` allows `add.Tensor` and `add.Scalar`, and the in-place `add_` and
`out=` overloads on the graph's own intermediates only: never on its parameters,
buffers, constants or inputs, which outlive a call, see `graph_rules.check_graph`).

Derived from what the seeds (train.py, genomes/gpt_muon.py) and a model with
scaled_dot_product_attention, RMSNorm, rotary embeddings, soft-capped logits
and bf16 autocast export to (torch 2.4-2.13), plus the common pure operators a
genome may reasonably use. Adding an operator here is a security decision:
it must read nothing but its arguments, write nothing but its result, and be
deterministic.
"""

from __future__ import annotations

ALLOWED: dict[str, frozenset[str]] = {
    # Shapes and views: no data changes; bounds are checked against the tensor.
    "shape": frozenset({
        "view", "reshape", "_unsafe_view", "_reshape_alias", "permute", "transpose", "t",
        "unsqueeze", "squeeze", "expand", "expand_as", "slice", "select", "narrow", "split",
        "split_with_sizes", "chunk", "tensor_split", "unbind", "cat", "concat", "stack",
        "flatten", "unflatten", "contiguous", "clone", "alias", "detach", "repeat",
        "repeat_interleave", "flip", "roll", "tril", "triu", "movedim", "diagonal", "pad",
        "constant_pad_nd", "index_select", "gather", "index", "take_along_dim", "masked_select",
        "unfold", "view_as_real", "view_as_complex", "real", "imag", "conj", "resolve_conj",
        "tile", "index_put", "index_add", "index_copy", "scatter", "scatter_add",
        "scatter_reduce", "masked_scatter", "select_scatter", "slice_scatter", "copy", "fill",
        "zero",
    }),
    # Fresh tensors of a given value (never uninitialised memory: no `empty`).
    "create": frozenset({
        "arange", "zeros", "ones", "full", "scalar_tensor", "zeros_like", "ones_like",
        "full_like", "linspace", "lift_fresh_copy", "one_hot", "new_zeros", "new_ones",
        "new_full",
    }),
    # Dtype and device casts, and the metadata check torch.export inserts beside them.
    "cast": frozenset({"to", "_to_copy", "type_as", "_assert_tensor_metadata"}),
    "elementwise": frozenset({
        "add", "sub", "rsub", "mul", "div", "neg", "pow", "sqrt", "rsqrt", "exp", "exp2",
        "expm1", "log", "log2", "log10", "log1p", "abs", "sign", "sin", "cos", "tan", "tanh",
        "atan", "atan2", "polar", "complex", "sigmoid", "logit", "relu", "relu6", "gelu", "silu", "mish", "softplus",
        "elu", "selu", "celu", "leaky_relu", "hardtanh", "hardswish", "hardsigmoid", "glu",
        "clamp", "clamp_min", "clamp_max", "clip", "where", "maximum", "minimum", "fmax", "fmin",
        "floor", "ceil", "round", "trunc", "frac", "remainder", "fmod", "floor_divide",
        "reciprocal", "square", "lerp", "addcmul", "addcdiv", "erf", "erfc", "erfinv",
        "masked_fill", "nan_to_num", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
        "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
        "bitwise_xor", "isnan", "isinf", "isfinite", "copysign", "hypot", "xlogy",
    }),
    "reduce": frozenset({
        "sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "var", "std",
        "var_mean", "std_mean", "norm", "linalg_vector_norm", "logsumexp", "cumsum", "cumprod",
        "cummax", "cummin", "logcumsumexp", "softmax", "log_softmax", "_softmax",
        "_log_softmax", "all", "any", "topk", "sort", "argsort",
    }),
    "linear_algebra": frozenset({
        "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum", "dot",
        "outer", "mv", "addmv", "_weight_norm",
    }),
    "nn": frozenset({
        "embedding", "layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm",
        "group_norm", "native_group_norm", "_native_batch_norm_legit_no_training",
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "convolution", "conv1d", "conv2d",
        "cosine_similarity", "pixel_shuffle", "avg_pool1d", "max_pool1d",
        "batch_norm", "_native_multi_head_attention", "lstm", "gru", "rnn_tanh", "rnn_relu",
        "bucketize", "searchsorted",
        "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",  # see ONLY_WHEN
    }),
}

# Operators that are pure only with one argument fixed: (argument name, required value).
# A model exported in eval mode keeps `dropout(x, p, train=False)`, the identity.
_NO_DROPOUT = ("dropout_p", 0.0)
ONLY_WHEN: dict[str, tuple[str, object]] = {
    "dropout": ("train", False), "feature_dropout": ("train", False),
    "alpha_dropout": ("train", False), "feature_alpha_dropout": ("train", False),
    "scaled_dot_product_attention": _NO_DROPOUT,
    "_scaled_dot_product_flash_attention_for_cpu": _NO_DROPOUT,
    "_scaled_dot_product_flash_attention": _NO_DROPOUT,
    "_scaled_dot_product_efficient_attention": _NO_DROPOUT,
    "_scaled_dot_product_cudnn_attention": _NO_DROPOUT,
}

# Higher-order operators that only wrap a subgraph (checked like the rest) in a mode.
ALLOWED_WRAPPERS = frozenset({"wrap_with_autocast", "wrap_with_set_grad_enabled"})

# Why some tempting operators stay out, for whoever reads a refusal and wonders.
REFUSED_BECAUSE = {
    "from_file": "reads a file", "save": "writes a file", "load": "reads a file",
    "empty": "hands out uninitialised memory, which may hold held-out tokens",
    "empty_like": "hands out uninitialised memory", "new_empty": "hands out uninitialised memory",
    "empty_strided": "hands out uninitialised memory",
    "as_strided": "reads storage outside the view it was given",
    "rand": "draws from the global random state", "randn": "draws from the global random state",
    "randint": "draws from the global random state", "bernoulli": "draws random numbers",
    "multinomial": "draws random numbers", "normal": "draws random numbers",
    "native_dropout": "draws random numbers",
    "_assert_async": "aborts the process from the device", "_print": "has a side effect",
}

ALLOWED_ATEN: frozenset[str] = frozenset().union(*ALLOWED.values())


def refusal(packet: str) -> str:
    """Why `aten.<packet>` may not run in the evaluator, in a few words."""
    return REFUSED_BECAUSE.get(packet, "it is not on the evaluator's list of pure tensor operators")
