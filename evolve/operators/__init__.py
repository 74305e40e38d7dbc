"""Variation operators: they turn parent genomes into child genomes (see docs/DESIGN.md)."""

from evolve.operators.base import Child, Operator, Parent, VariationError
from evolve.operators.dedupe import GenomeSyntaxError, check_syntax, normalized_hash
from evolve.operators.hyperparams import (
    Constant,
    HyperparamCrossover,
    HyperparamMutation,
    find_constants,
)
from evolve.operators.mix import (
    DEFAULT_CXPB,
    DEFAULT_OPERATORS,
    OperatorMix,
    known_operators,
    make_operator,
    register_operator,
    unregister_operator,
)

__all__ = [
    "DEFAULT_CXPB",
    "DEFAULT_OPERATORS",
    "Child",
    "Constant",
    "GenomeSyntaxError",
    "HyperparamCrossover",
    "HyperparamMutation",
    "Operator",
    "OperatorMix",
    "Parent",
    "VariationError",
    "check_syntax",
    "find_constants",
    "known_operators",
    "make_operator",
    "normalized_hash",
    "register_operator",
    "unregister_operator",
]
