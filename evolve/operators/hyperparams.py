"""Operators that edit a genome's UPPER_CASE hyperparameter literals.

They read the syntax tree but rewrite only each literal's own source span, so
comments, spacing and the rest of the file stay byte-for-byte unchanged and a
child's diff against its parent is exactly the idea it claims.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from evolve.operators.base import Child, Parent, VariationError, require_parents
from evolve.operators.dedupe import check_syntax, parse

Scalar = int | float
Value = int | float | bool | tuple | list

_NAME = re.compile(r"^_*[A-Z][A-Z0-9_]*$")
_POW2_TEXT = re.compile(r"^(\s*2\s*\*\*\s*)(\d+)(\s*)$")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BINOPS: dict[type, Callable[[Scalar, Scalar], Scalar]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}
SIG_DIGITS = 3
MAX_INT = 2**63  # a bigger integer is no hyperparameter (and no float can hold 10**400)


@dataclass(frozen=True)
class Constant:
    """One `NAME = literal` at module level, with where its literal sits in the source."""

    name: str
    value: Value
    text: str  # the literal's exact source text
    node: ast.expr = field(repr=False, compare=False)


class _NotLiteral(Exception):
    pass


def _number(node: ast.expr) -> Scalar:
    """Evaluate a numeric literal: `3e-4`, `-2`, `2 ** 10`, `3 * 1e-4`."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number(node.operand)
        value = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _number(node.left), _number(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise _NotLiteral  # keep `10 ** 10 ** 10` from eating the machine
        try:
            value = _BINOPS[type(node.op)](left, right)
        except (ArithmeticError, ValueError):
            raise _NotLiteral from None
    else:
        raise _NotLiteral
    if type(value) not in (int, float) or (isinstance(value, float) and not math.isfinite(value)):
        raise _NotLiteral  # complex results, inf, nan
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise _NotLiteral  # left as written: mutating or reading it as a float would overflow
    return value


def _literal(node: ast.expr) -> Value:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts:
        items = [_number(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    return _number(node)


def find_constants(source: str) -> dict[str, Constant]:
    """Module-level `UPPER_CASE = literal` assignments (plain or annotated), in source order.

    Literals are numbers (with sign or simple arithmetic), bools, and non-empty
    tuples/lists of numbers. Raises `VariationError` if the source does not parse.
    """
    segment = _Segments(source)
    return {
        name: Constant(name, value, segment(node), node)
        for name, value, node in literal_assignments(parse(source).body)
    }


def literal_assignments(body: list[ast.stmt]) -> Iterator[tuple[str, Any, ast.expr]]:
    """(name, value, value node) of each `UPPER_CASE = literal` statement in `body`."""
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, node = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, node = stmt.target, stmt.value
        else:
            continue
        if not (isinstance(target, ast.Name) and _NAME.match(target.id)):
            continue
        try:
            yield target.id, _literal(node), node
        except _NotLiteral:
            continue


class _Segments:
    """`ast.get_source_segment` with the source split into lines once, not once per node
    (which made a genome's constants cost milliseconds each)."""

    def __init__(self, source: str) -> None:
        data = source.encode("utf-8")
        ends = [m.end() for m in _LINE_END.finditer(data)]
        self.lines = [data[a:b] for a, b in zip([0, *ends], [*ends, len(data)], strict=True)]

    def __call__(self, node: ast.expr) -> str:
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        if first == last:
            return self.lines[first][node.col_offset : node.end_col_offset].decode("utf-8")
        parts = [
            self.lines[first][node.col_offset :],
            *self.lines[first + 1 : last],
            self.lines[last][: node.end_col_offset],
        ]
        return b"".join(parts).decode("utf-8")


def replace_spans(source: str, edits: list[tuple[ast.expr, str]]) -> str:
    """Replace each node's exact source span with new text; everything else is kept.

    AST column offsets are UTF-8 byte offsets, so the edit happens on bytes.
    """
    data = source.encode("utf-8")
    starts = [0] + [m.end() for m in _LINE_END.finditer(data)]
    spans = sorted(
        (
            (starts[n.lineno - 1] + n.col_offset, starts[n.end_lineno - 1] + n.end_col_offset, text)
            for n, text in edits
        ),
        reverse=True,
    )
    for begin, end, text in spans:
        data = data[:begin] + text.encode("utf-8") + data[end:]
    return data.decode("utf-8")


# ---------------------------------------------------------------- formatting


def _format_float(x: float, like: str, sig: int = SIG_DIGITS) -> str:
    """Write a positive float with `sig` significant digits in the style of `like`.

    Exponent style (`3e-4`) stays exponent style; plain decimals stay plain.
    Values close to 1 (betas, momentum) get their digits counted on `1 - x`,
    so 0.999 can move to 0.9986 instead of rounding back to itself.
    """
    if "e" in like.lower():
        mantissa, exponent = f"{x:.{sig - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}{'E' if 'E' in like else 'e'}{int(exponent)}"
    if x >= 1:
        x = float(f"{x:.{sig}g}")
    small = min(x, 1 - x) if 0 < x < 1 else x
    decimals = max(sig - 1 - math.floor(math.log10(small)), 1)
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0")
        text += "0" if text.endswith(".") else ""
    return text


def _format_int(n: int, like: str) -> str:
    """Write a positive int like the original: `2 ** 11` for `2 ** 10`, `12_000` for `10_000`."""
    match = _POW2_TEXT.match(like)
    if match and n & (n - 1) == 0:
        return f"{match.group(1)}{n.bit_length() - 1}{match.group(3)}"
    return f"{n:_}" if "_" in like else str(n)


# ---------------------------------------------------------------- mutation


def _perturb_float(x: float, step: float) -> float:
    """Log-normal step; inside (0, 1) a logit-space step, so rates and betas stay in (0, 1)."""
    if 0 < x < 1:
        return 1 / (1 + math.exp(-(math.log(x / (1 - x)) + step)))
    return x * math.exp(step)


def _mutate_float(x: float, text: str, rng: random.Random, scale: float) -> str:
    magnitude = abs(x)
    for _ in range(20):
        new_text = _format_float(_perturb_float(magnitude, rng.gauss(0.0, scale)), text)
        if float(new_text) != magnitude:
            break
    else:  # the steps kept rounding back to the old value: take one fixed step
        step = rng.choice((-1, 1)) * max(scale, 0.05)
        new_text = _format_float(_perturb_float(magnitude, step), text)
    return ("-" if x < 0 else "") + new_text


def _mutate_int(n: int, text: str, rng: random.Random, scale: float) -> str:
    """Powers of two double or halve; other ints move by a log-normal step (at least 1)."""
    magnitude = abs(n)
    if magnitude & (magnitude - 1) == 0:
        new = magnitude * 2 if magnitude == 1 or rng.random() < 0.5 else magnitude // 2
    else:
        new = round(magnitude * math.exp(rng.gauss(0.0, scale)))
        if new == magnitude:
            new += rng.choice((-1, 1))
        new = max(new, 1)
        if new == magnitude:
            new += 1
    return ("-" if n < 0 else "") + _format_int(new, text.lstrip("-"))


def _mutable(value: Value) -> bool:
    """Zero has no scale to perturb, so it is left alone (as are all-zero tuples)."""
    if isinstance(value, (tuple, list)):
        return any(v != 0 for v in value)
    return isinstance(value, bool) or value != 0


def _scalar_edit(value: Value, text: str, rng: random.Random, scale: float) -> str:
    if isinstance(value, bool):
        return str(not value)
    if isinstance(value, int):
        return _mutate_int(value, text, rng, scale)
    return _mutate_float(value, text, rng, scale)


def _edits_for(
    const: Constant, source: str, rng: random.Random, scale: float
) -> list[tuple[ast.expr, str]]:
    if isinstance(const.value, (tuple, list)):
        assert isinstance(const.node, (ast.Tuple, ast.List))
        return [
            (elt, _scalar_edit(v, ast.get_source_segment(source, elt) or "", rng, scale))
            for elt, v in zip(const.node.elts, const.value, strict=True)
            if v != 0
        ]
    return [(const.node, _scalar_edit(const.value, const.text, rng, scale))]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _no_constants(parent: Parent) -> VariationError:
    return VariationError(
        f"genome {parent.id} has no mutable UPPER_CASE constants (NAME = number/bool/tuple)"
    )


class HyperparamMutation:
    """Perturb some of a genome's constants (each with probability `rate`, at least one).

    Floats take log-normal steps of width `scale` (logit steps inside (0, 1)),
    ints move ~`scale` relative (powers of two double or halve), bools flip,
    tuples and lists are mutated element by element.
    """

    arity = 1

    def __init__(self, rate: float = 0.2, scale: float = 0.3, name: str = "hyper_mutate") -> None:
        if not 0 <= rate <= 1 or scale <= 0:
            raise ValueError("rate must be in [0, 1] and scale > 0")
        self.name, self.rate, self.scale = name, rate, scale

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        require_parents(self, parents)
        parent = parents[0]
        constants = find_constants(parent.source)
        mutable = [c for c in constants.values() if _mutable(c.value)]
        if not mutable:
            raise _no_constants(parent)
        chosen = [c for c in mutable if rng.random() < self.rate] or [rng.choice(mutable)]
        edits = [e for c in chosen for e in _edits_for(c, parent.source, rng, self.scale)]
        source = replace_spans(parent.source, edits)
        check_syntax(source)
        after = find_constants(source)
        changes = {}
        for c in chosen:
            if c.name not in after:
                raise VariationError(f"{c.name} stopped being a constant after mutation")
            changes[c.name] = {"from": _one_line(c.text), "to": _one_line(after[c.name].text)}
        idea = ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in changes.items())
        return Child(source, self.name, [parent.id], idea, {"changes": changes})


class HyperparamCrossover:
    """Uniform crossover of constants: the first parent's code with some of the
    second parent's values (each differing shared constant with probability `prob`).

    At least one value comes from the second parent and, when two or more
    differ, at least one stays from the first, so the child differs from both.
    """

    arity = 2

    def __init__(self, prob: float = 0.5, name: str = "hyper_crossover") -> None:
        if not 0 <= prob <= 1:
            raise ValueError("prob must be in [0, 1]")
        self.name, self.prob = name, prob

    def vary(self, parents: list[Parent], rng: random.Random) -> Child:
        require_parents(self, parents)
        first, second = parents
        mine, theirs = find_constants(first.source), find_constants(second.source)
        differing = [
            n for n in mine if n in theirs and repr(mine[n].value) != repr(theirs[n].value)
        ]
        if not differing:
            raise VariationError(
                f"genomes {first.id} and {second.id} share no constants with different values"
            )
        taken = [n for n in differing if rng.random() < self.prob] or [rng.choice(differing)]
        if len(taken) == len(differing) > 1:
            taken.remove(rng.choice(taken))
        edits = []
        for n in taken:
            text = theirs[n].text
            edits.append((mine[n].node, f"({text})" if "\n" in text else text))
        source = replace_spans(first.source, edits)
        check_syntax(source)
        changes = {
            n: {"from": _one_line(mine[n].text), "to": _one_line(theirs[n].text)} for n in taken
        }
        idea = f"from {second.id}: " + ", ".join(
            f"{n} {c['from']} -> {c['to']}" for n, c in changes.items()
        )
        return Child(source, self.name, [first.id, second.id], idea, {"changes": changes})
