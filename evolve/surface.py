"""A response surface over a genome's UPPER_CASE constants: its features and a ridge fit.

Shared by the surrogate executor (a surface fitted to recorded real evaluations, for
benchmarks) and by pre-screening (a surface fitted to the run's own archive, to pick which
of several cheap children to evaluate). A genome is described by each numeric constant as
a log ratio to a reference genome's value (the seed's), so "halve SEQ_LEN" is the same step
wherever it starts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping

import numpy as np

from evolve.operators import VariationError
from evolve.operators.dedupe import parse
from evolve.operators.hyperparams import literal_assignments


@functools.lru_cache(maxsize=4096)
def constant_values(source: str) -> dict[str, float]:
    """Numeric constants by name; tuple/list elements as NAME[i], bools as 0/1.

    The same constants `find_constants` sees, without their source spans (which cost
    milliseconds each and are not needed here)."""
    out: dict[str, float] = {}
    try:
        body = parse(source).body
    except VariationError:  # a genome that does not parse has no features
        return out
    for name, value, _ in literal_assignments(body):
        if isinstance(value, (tuple, list)):
            out.update({f"{name}[{i}]": float(v) for i, v in enumerate(value)})
        else:
            out[name] = float(value)
    return out


def features(source: str, reference: Mapping[str, float], names: Iterable[str]) -> np.ndarray:
    """Log ratio of each named constant to the reference (0: unchanged, missing or sign flip)."""
    values = constant_values(source)
    row = []
    for name in names:
        ref, value = reference.get(name), values.get(name)
        if ref is None or value is None or value == ref:
            row.append(0.0)
        elif ref > 0 and value > 0:
            row.append(math.log(value / ref))
        elif ref < 0 and value < 0:
            row.append(math.log(value / ref))
        else:
            row.append(1.0 if value != ref else 0.0)  # bools and zeros: changed or not
    return np.asarray(row, dtype=float)


def ridge(a: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression weights of `y` on the design `a` (column 0: the intercept)."""
    penalty = lam * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(a.T @ a + penalty, a.T @ y)
