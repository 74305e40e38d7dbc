"""Syntax checks and a formatting-blind hash, so the engine never evaluates the
same program twice just because an operator reworded a comment."""

from __future__ import annotations

import ast
import hashlib
import threading
from typing import NoReturn

from evolve.operators.base import VariationError

_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# ValueError: null bytes; RecursionError/MemoryError: absurdly deep nesting.
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)
# CPython 3.11 keeps the AST constructor's recursion depth in shared state, so two threads
# parsing at once (proposals run in a thread pool) can fail with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905). Parse one at a time.
_AST_LOCK = threading.Lock()


class GenomeSyntaxError(VariationError):
    """The genome does not compile; `lineno` points at the offending line."""

    def __init__(self, lineno: int | None, msg: str, line: str = "") -> None:
        self.lineno, self.msg, self.line = lineno, msg, line
        where = f"line {lineno}" if lineno else "unknown line"
        text = f"syntax error at {where}: {msg}"
        if line.strip():
            text += f" ({line.strip()!r})"
        super().__init__(text)


def _raise(exc: BaseException) -> NoReturn:
    if isinstance(exc, SyntaxError):
        raise GenomeSyntaxError(exc.lineno, exc.msg, exc.text or "") from None
    raise GenomeSyntaxError(None, str(exc) or type(exc).__name__) from None


def check_syntax(source: str) -> None:
    """Raise `GenomeSyntaxError` unless `source` compiles (it is never executed).

    A full compile also catches errors the parser lets through, such as
    `return` outside a function.
    """
    try:
        with _AST_LOCK:
            compile(source, "<genome>", "exec", dont_inherit=True)
    except _PARSE_ERRORS as exc:
        _raise(exc)


def parse(source: str) -> ast.Module:
    """Parse a genome, turning every parse failure into `GenomeSyntaxError`."""
    try:
        with _AST_LOCK:
            return ast.parse(source)
    except _PARSE_ERRORS as exc:
        _raise(exc)


def _strip_docstrings(tree: ast.Module) -> None:
    for node in list(ast.walk(tree)):
        if not isinstance(node, _DOC_OWNERS) or not node.body:
            continue
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            rest = node.body[1:]
            node.body = rest if rest or isinstance(node, ast.Module) else [ast.Pass()]


def normalized_hash(source: str) -> str:
    """sha256 of the syntax tree without docstrings.

    Comments, whitespace and docstrings do not change it; any code or constant
    change does (`3e-4` and `0.0003` are the same constant, so they hash equal).
    """
    check_syntax(source)
    tree = parse(source)
    _strip_docstrings(tree)
    try:
        dumped = ast.dump(tree)
    except RecursionError:
        raise GenomeSyntaxError(None, "program is nested too deeply") from None
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()
