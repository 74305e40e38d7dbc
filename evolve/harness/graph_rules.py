"""What an exported graph may be: allowlisted pure ATen operators, and no state kept between calls.

The evaluator runs the genome's graph in its own process; these checks run
before the first call, so a graph that could read a file, draw random numbers or
remember a probe is refused rather than scored.
"""

from __future__ import annotations

import io
import operator
from typing import Any

from evolve.harness.operators import ALLOWED_ATEN, ALLOWED_WRAPPERS, ONLY_WHEN, refusal
from evolve.harness.vet import Rejected, vet_archive


def load_model(archive: str | io.BytesIO) -> Any:
    """The vetted, loaded and checked ExportedProgram at `archive` (a path, or vetted bytes)."""
    import torch

    if not isinstance(archive, io.BytesIO):
        archive = vet_archive(archive)
    archive.seek(0)
    try:
        program = torch.export.load(archive)
    except Exception as exc:
        raise Rejected(
            f"the handed-in model could not be loaded: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
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
            if (
                node.op == "call_function"
                and isinstance(target, torch._ops.HigherOrderOperator)
                and target.name() in ALLOWED_WRAPPERS
            ):
                continue
            if (
                node.op != "call_function"
                or not isinstance(target, torch._ops.OpOverload)
                or target.namespace != "aten"
            ):
                raise Rejected(
                    f"the exported graph calls {target!r} ({node.op}), which is not an "
                    "ATen operator; refused"
                )
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
        raise Rejected(
            f"the exported graph calls aten.{packet}.{overload}, which writes into "
            f"{', '.join(written)}: it keeps state between calls or changes its input; "
            "refused"
        )
    base = packet[:-1] if schema.is_mutable and packet.endswith("_") else packet
    if base not in ALLOWED_ATEN:
        raise Rejected(
            f"the exported graph calls aten.{packet}, which {refusal(base)}: "
            "only pure tensor operators run in the evaluator; refused"
        )
    if base in ONLY_WHEN:
        name, required = ONLY_WHEN[base]
        value = _argument(node, target, name)
        if value != required:
            raise Rejected(
                f"the exported graph calls aten.{packet} with {name}={value!r}, which "
                "draws random numbers (export the model in eval mode); refused"
            )
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
            raise Rejected(
                f"the exported graph keeps state between calls ({what} of "
                f"{spec.target or 'an input'}): nothing may persist from one call to "
                "the next; refused"
            )
    for spec in signature.input_specs:
        if spec.kind in (InputKind.TOKEN, InputKind.CUSTOM_OBJ):
            raise Rejected(
                f"the exported graph takes a {spec.kind.name.lower()} input "
                "(side effects or script objects); refused"
            )


def count_params(program: Any) -> int:
    return sum(
        int(program.state_dict[name].numel())
        for name in program.graph_signature.parameters
        if name in program.state_dict
    )
