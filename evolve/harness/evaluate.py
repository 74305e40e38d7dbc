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
"""

from __future__ import annotations

import io
import json
import math
import operator
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.harness import landlock, limits, syscalls
from evolve.harness.operators import ALLOWED_ATEN, ALLOWED_WRAPPERS, ONLY_WHEN, refusal
from evolve.harness.settings import EvaluatorSettings
from evolve.harness.shape import graph_shape
from evolve.harness.vet import Rejected, vet_archive

CAUSAL_TOL = 1e-3  # nats; a causal model changes by exactly 0 on CPU
SECRET_HEX = 64  # the runner's per-evaluation secret: 32 random bytes, hex


# ---------------------------------------------------------------------------
# What a graph may be


def load_model(archive: str | io.BytesIO) -> Any:
    """The vetted, loaded and checked ExportedProgram at `archive` (a path, or vetted bytes)."""
    import torch

    if not isinstance(archive, io.BytesIO):
        archive = vet_archive(archive)
    archive.seek(0)
    try:
        program = torch.export.load(archive)
    except Exception as exc:
        raise Rejected(f"the handed-in model could not be loaded: {type(exc).__name__}: "
                       f"{str(exc)[:300]}") from exc
    check_graph(program)
    return program


def check_graph(program: Any) -> None:
    """Only allowlisted pure tensor operators may run in the evaluator, and nothing persists.

    See `evolve.harness.operators` for the list and why it is a list: any ATen
    operator would let a graph read a file, draw random numbers, or see
    uninitialised memory. In-place operators (`add_`, `masked_fill_`, `out=`) are
    fine on the graph's own intermediates, never on what outlives a call: its
    parameters, buffers, constants and inputs, or a view of them.
    """
    import torch

    check_state(program)
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        lasting: dict[Any, str] = {}  # node -> the placeholder it is (a view of)
        for node in module.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                lasting[node] = node.name
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            if node.op == "call_function" and target is operator.getitem:
                if node.args[0] in lasting:
                    lasting[node] = lasting[node.args[0]]
                continue
            if node.op == "call_function" and isinstance(target, torch._ops.HigherOrderOperator) \
                    and target.name() in ALLOWED_WRAPPERS:
                continue
            if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) \
                    or target.namespace != "aten":
                raise Rejected(f"the exported graph calls {target!r} ({node.op}), which is not an "
                               "ATen operator; refused")
            _check_operator(node, target, lasting)


def _check_operator(node: Any, target: Any, lasting: dict[Any, str]) -> None:
    """One ATen call: allowlisted, with its fixed arguments, writing only into intermediates."""
    import torch

    packet, overload = target._opname, target._overloadname
    schema = target._schema
    written, viewed = [], []
    for index, spec in enumerate(schema.arguments):
        value = node.args[index] if index < len(node.args) else node.kwargs.get(spec.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        roots = [lasting[v] for v in values if isinstance(v, torch.fx.Node) and v in lasting]
        if spec.alias_info is not None and roots:
            (written if spec.alias_info.is_write else viewed).extend(roots)
    if written:
        raise Rejected(f"the exported graph calls aten.{packet}.{overload}, which writes into "
                       f"{', '.join(written)}: it keeps state between calls or changes its input; "
                       "refused")
    base = packet[:-1] if schema.is_mutable and packet.endswith("_") else packet
    if base not in ALLOWED_ATEN:
        raise Rejected(f"the exported graph calls aten.{packet}, which {refusal(base)}: "
                       "only pure tensor operators run in the evaluator; refused")
    if base in ONLY_WHEN:
        name, required = ONLY_WHEN[base]
        value = _argument(node, target, name)
        if value != required:
            raise Rejected(f"the exported graph calls aten.{packet} with {name}={value!r}, which "
                           "draws random numbers (export the model in eval mode); refused")
    if viewed and any(ret.alias_info is not None for ret in schema.returns):
        lasting[node] = viewed[0]  # a view of something that outlives the call


def _argument(node: Any, target: Any, name: str) -> Any:
    """The value of argument `name` in a call node (its schema default when not given)."""
    for index, spec in enumerate(target._schema.arguments):
        if spec.name == name:
            if index < len(node.args):
                return node.args[index]
            return node.kwargs.get(name, spec.default_value)
    return None


def check_state(program: Any) -> None:
    """Refuse graphs that write to their buffers, parameters or inputs, or carry effect tokens.

    Such writes would persist from one call to the next inside the evaluator: a
    model could behave while it is probed and cheat afterwards. A functional graph
    declares them in its signature; a training-IR graph (torch.export's default
    since 2.5) calls an in-place operator instead, which `check_graph` refuses.
    """
    from torch.export.graph_signature import InputKind, OutputKind

    signature = program.graph_signature
    for spec in signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            what = spec.kind.name.lower().replace("_", " ")
            raise Rejected(f"the exported graph keeps state between calls ({what} of "
                           f"{spec.target or 'an input'}): nothing may persist from one call to "
                           "the next; refused")
    for spec in signature.input_specs:
        if spec.kind in (InputKind.TOKEN, InputKind.CUSTOM_OBJ):
            raise Rejected(f"the exported graph takes a {spec.kind.name.lower()} input "
                           "(side effects or script objects); refused")


# ---------------------------------------------------------------------------
# What is scored: secret windows of the held-out pool


@dataclass
class Batch:
    """One scored batch and its probe, all on the device before the sandbox closes."""

    x: Any  # (B, T) int64 inputs
    y: Any  # (B, T) targets
    mask: Any  # (B, T) bool: which targets count (padding rows and the last window's tail do not)
    donor: Any  # (B, T) natural held-out text that replaces the probed tails
    cuts: Any  # (B,) int64: the probe keeps positions < cut of each row; 0 = row wholly replaced


def stratified_starts(span: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` window starts in [0, span): one uniform draw in each of `count` equal strata.

    Stratifying keeps the sampling noise of a random subset low: every part of
    the pool is scored in every evaluation, at positions no genome can predict.
    """
    edges = np.linspace(0.0, float(span), count + 1)
    starts = np.floor(edges[:-1] + rng.random(count) * np.diff(edges)).astype(np.int64)
    return np.clip(starts, 0, span - 1)


def plan(pool: np.ndarray, n_targets: int, seq_len: int, batch: int, rng: np.random.Generator,
         device: str = "cpu") -> list[Batch]:
    """The batches that score `n_targets` targets of `pool`, with their probes.

    Windows of seq_len + 1 tokens start at secret stratified offsets (they may
    overlap when the pool is small) and are shuffled across batches. Each probe
    gives every row its own secret cut and replaces a random quarter of the rows
    wholly, with text from other secret places of the pool.
    """
    import torch

    length = len(pool)
    if length < seq_len + 1:
        raise Rejected(f"seq_len {seq_len} is longer than the held-out split ({length} tokens)")
    count = math.ceil(n_targets / seq_len)
    starts = stratified_starts(length - seq_len, count, rng)
    rng.shuffle(starts)
    n_batches = math.ceil(count / batch)
    starts = np.concatenate([starts, np.repeat(starts[:1], n_batches * batch - count)])
    windows = np.asarray(pool[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    mask = np.zeros(n_batches * batch * seq_len, dtype=bool)
    mask[:n_targets] = True
    donor_starts = rng.integers(0, length - seq_len + 1, size=n_batches * batch)
    donors = np.asarray(pool[donor_starts[:, None] + np.arange(seq_len)], dtype=np.int64)
    cuts = rng.integers(1, max(seq_len, 2), size=(n_batches, batch))
    if batch > 1:
        for row_cuts in cuts:
            row_cuts[rng.choice(batch, size=max(1, batch // 4), replace=False)] = 0

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    x = tensor(windows[:, :-1]).view(n_batches, batch, seq_len)
    y = tensor(windows[:, 1:]).view(n_batches, batch, seq_len)
    masks = tensor(mask).view(n_batches, batch, seq_len)
    donors_t = tensor(donors).view(n_batches, batch, seq_len)
    cuts_t = tensor(cuts)
    return [Batch(x[i], y[i], masks[i], donors_t[i], cuts_t[i]) for i in range(n_batches)]


# ---------------------------------------------------------------------------
# Running the graph


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


def _kept(cuts: Any, length: int) -> Any:
    import torch

    return torch.arange(length, device=cuts.device)[None, :] < cuts[:, None]


def probe_input(x: Any, donor: Any, cuts: Any) -> Any:
    """`x` with each row's tokens from its cut on replaced by the donor's (a cut of 0: all)."""
    import torch

    return torch.where(_kept(cuts, x.shape[1]), x, donor)


def check_causal(module: Any, x: Any, vocab: int, rng: np.random.Generator | None = None,
                 donor: Any = None, cuts: Any = None, base: Any = None) -> None:
    """Reject models whose predictions at position t depend on tokens after t or on other rows.

    One probe: every row gets its own cut (its tokens from the cut on are replaced)
    and some rows are replaced wholly; every kept prefix must predict exactly as
    before. Compared as log-probabilities (what the loss sees), so inflating
    logits cannot widen the tolerance. The evaluator passes secret cuts and
    natural replacement text for every scored batch; without them, cuts come
    from `rng` and the text from elsewhere in the batch (unit tests).
    """
    import torch

    rows, length = x.shape
    if cuts is None:
        rng = rng or np.random.default_rng()
        drawn = rng.integers(1, max(length, 2), size=rows)
        if rows > 1:
            drawn[rng.choice(rows, size=max(1, rows // 4), replace=False)] = 0
        cuts = torch.from_numpy(drawn).to(x.device)
    if donor is None:
        donor = x.roll(shifts=(1, max(1, length // 3)), dims=(0, 1))
    if base is None:
        base = _logprobs(module, x, vocab)
    changed = (_logprobs(module, probe_input(x, donor, cuts), vocab) - base).abs()
    changed = changed.amax(-1) * _kept(cuts, length)
    diff = float(changed.max())
    if diff <= CAUSAL_TOL:
        return
    row = int(changed.amax(-1).argmax())
    # Which rule broke: change only the other rows and look at this row again.
    others = torch.zeros_like(cuts)
    others[row] = length
    mixed = float((_logprobs(module, probe_input(x, donor, others), vocab)[row] - base[row])
                  .abs().max()) if rows > 1 else 0.0
    if mixed > CAUSAL_TOL:
        raise Rejected(f"model mixes information across the batch: changing other rows changed "
                       f"row {row}'s predictions by {mixed:.3g} nats")
    cut = int(cuts[row])
    raise Rejected(f"non-causal model: changing a row's tokens from position {cut} on changed "
                   f"the predictions before it by {diff:.3g} nats (tolerance {CAUSAL_TOL:g})")


def score_batches(module: Any, batches: list[Batch], vocab: int,
                  token_bytes: Any = None) -> tuple[float, int]:
    """(nats, bytes) over the batches' masked targets; every batch is probed for causality."""
    import torch

    total_nats, total_bytes = 0.0, 0
    with torch.inference_mode():
        for b in batches:
            logp = _forward(module, b.x, vocab).log_softmax(-1)
            check_causal(module, b.x, vocab, donor=b.donor, cuts=b.cuts, base=logp.clamp(min=-30.0))
            nats = -logp.gather(-1, b.y.unsqueeze(-1)).squeeze(-1)
            total_nats += float((nats * b.mask).sum())
            if token_bytes is None:
                total_bytes += int(b.mask.sum())
            else:
                total_bytes += int((token_bytes[b.y] * b.mask).sum())
    return total_nats, total_bytes


def count_params(program: Any) -> int:
    return sum(int(program.state_dict[name].numel())
               for name in program.graph_signature.parameters if name in program.state_dict)


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
                q, k, v = self.qkv(F.rms_norm(x, (8,))).view(*idx.shape, 3, 2, 4).transpose(1, 3).unbind(2)
                q = torch.cat([q[..., :2] * self.angle.cos() - q[..., 2:] * self.angle.sin(),
                               q[..., 2:] * self.angle.cos() + q[..., :2] * self.angle.sin()], -1)
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
    nats, n_bytes = score_batches(program.module(), prepared.batches, config.vocab_size,
                                  prepared.token_bytes)
    return {"val_bpb": nats / math.log(2) / n_bytes, "params": count_params(program),
            "eval_tokens": config.eval_tokens, **graph_shape(program)}


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
    return {"status": "invalid", "reason": f"evaluation failed: {type(exc).__name__}: {str(exc)[:300]}"}


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
