"""A surrogate executor: answers from a response surface fitted to recorded real evaluations.

For algorithm work only (tuning selection, insertion, racing and descriptors, and in
tests): thousands of evaluations run in seconds. Claims about the search on real
training come from real runs (benchmarks/bench_search.py without --surrogate).

The surface is fitted to the records of real runs that start from one reference genome
(the seed). A genome is described by its UPPER_CASE constants, each as a log ratio to
the reference's value (`features`), clamped to the range the records cover. Fitted by
ridge regression on those features and their squares:

- val_bpb: the mean, i.e. each hyperparameter's effect (with curvature);
- noise: log |residual| (so each genome has its own spread: a faster genome that takes
  more, noisier steps spreads more than the seed);
- failures (crashed, timeout, over_budget, oom, invalid): a logistic model, failure
  statuses drawn as often as they were recorded;
- params, seq_len, steps, tokens, peak memory: log-linear models, so every descriptor
  a grid can use has a value.

The residual noise includes what the model cannot explain, so the surrogate is noisier
than the truth where records are sparse: a conservative stand-in for a real run.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evolve.executors.base import EvalRequest
from evolve.record import EvalResult
from evolve.surface import constant_values, features, ridge

MEASURES = ("params", "seq_len", "steps", "tokens", "peak_memory_bytes")
FAILURES = ("crashed", "timeout", "over_budget", "oom", "invalid")
LOG_ABS_NORMAL = 0.6352  # E[log|e|] = log(sigma) - 0.6352 for e ~ N(0, sigma^2)


def _design(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return np.hstack([np.ones((x.shape[0], 1)), x, x**2])


def _logistic(a: np.ndarray, y: np.ndarray, lam: float, iters: int = 30) -> np.ndarray:
    w = np.zeros(a.shape[1])
    rate = min(max(y.mean(), 1e-3), 1 - 1e-3)
    w[0] = math.log(rate / (1 - rate))
    penalty = lam * np.eye(a.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(iters):  # Newton steps on the penalised log-likelihood
        p = 1 / (1 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + penalty @ w
        hess = a.T @ (a * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(a.shape[1])
        w -= np.linalg.solve(hess, grad)
    return w


@dataclass
class Surrogate:
    """A fitted response surface; `sample` turns a genome source into one evaluation record."""

    reference: dict[str, float]
    names: list[str]
    low: list[float]
    high: list[float]
    bpb: list[float]
    noise: list[float]
    fail: list[float]
    measures: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # recorded failure statuses
    budget: float = 0.0
    wall_seconds: float = 0.0
    records: int = 0
    noise_floor: float = 1e-4

    def _x(self, source: str) -> np.ndarray:
        return np.clip(features(source, self.reference, self.names), self.low, self.high)

    def predict(self, source: str) -> dict[str, Any]:
        """Expected val_bpb, the genome's noise std, its failure probability and measures."""
        a = _design(self._x(source))[0]
        out = {
            "mean": float(a @ np.asarray(self.bpb)),
            "std": max(self.noise_floor, float(math.exp(a @ np.asarray(self.noise)))),
            "p_fail": float(1 / (1 + math.exp(-float(a @ np.asarray(self.fail))))),
        }
        for name, w in self.measures.items():
            out[name] = float(math.exp(a @ np.asarray(w)))
        return out

    def sample(self, source: str, seed: int) -> EvalResult:
        """One evaluation: deterministic given the genome and the evaluation seed."""
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        rng = random.Random(f"{digest}:{seed}")
        p = self.predict(source)
        common = {
            "budget": self.budget,
            "seed": seed,
            "wall_seconds": self.wall_seconds,
            "training_seconds": self.budget,
            "device": "surrogate",
        }
        measured = {k: int(round(p[k])) for k in self.measures}
        if rng.random() < p["p_fail"] and self.statuses:
            kinds, counts = zip(*sorted(self.statuses.items()), strict=True)
            status = rng.choices(kinds, weights=counts)[0]
            return EvalResult(status=status, reason=f"surrogate: {status}", **common)
        return EvalResult(status="ok", val_bpb=rng.gauss(p["mean"], p["std"]), **common, **measured)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Surrogate:
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit(samples: list[tuple[str, dict[str, Any]]], reference: str, lam: float = 1.0) -> Surrogate:
    """Fit a surrogate to (genome source, result dict) pairs of real val evaluations."""
    ref = constant_values(reference)
    rows = [(features(src, ref, sorted(ref)), res) for src, res in samples]
    moved = [n for i, n in enumerate(sorted(ref)) if any(abs(r[0][i]) > 0 for r in rows)]
    index = [sorted(ref).index(n) for n in moved]
    x = np.asarray([r[0][index] for r in rows]).reshape(len(rows), len(moved))
    low, high = x.min(axis=0) if len(x) else [], x.max(axis=0) if len(x) else []
    a = _design(x)
    ok = np.asarray(
        [res.get("status") == "ok" and res.get("val_bpb") is not None for _, res in rows]
    )
    failed = np.asarray([res.get("status") in FAILURES for _, res in rows])
    if ok.sum() < 3:
        raise ValueError("a surrogate needs at least 3 ok evaluations")
    y = np.asarray([res["val_bpb"] for (_, res), good in zip(rows, ok, strict=True) if good])
    bpb = ridge(a[ok], y, lam)
    residual = y - a[ok] @ bpb
    noise = ridge(a[ok], np.log(np.abs(residual) + 1e-6), 3 * lam)
    noise[0] += LOG_ABS_NORMAL
    noise[0] += _replicate_shift(rows, ok, a, noise)
    judged = ok | failed
    fail = _logistic(a[judged], failed[judged].astype(float), lam)
    measures = {}
    for name in MEASURES:
        pairs = [(i, res.get(name)) for i, (_, res) in enumerate(rows) if ok[i]]
        pairs = [(i, v) for i, v in pairs if isinstance(v, (int, float)) and v > 0]
        if len(pairs) >= 3:
            idx = [i for i, _ in pairs]
            measures[name] = ridge(a[idx], np.log([v for _, v in pairs]), 0.01 * lam).tolist()
    statuses = Counter(res["status"] for _, res in rows if res.get("status") in FAILURES)
    budgets = [res.get("budget") or 0.0 for _, res in rows]
    walls = sorted(res.get("wall_seconds") or 0.0 for _, res in rows)
    return Surrogate(
        reference=ref,
        names=moved,
        low=list(map(float, low)),
        high=list(map(float, high)),
        bpb=bpb.tolist(),
        noise=noise.tolist(),
        fail=fail.tolist(),
        measures=measures,
        statuses=dict(statuses),
        budget=float(max(budgets, default=0.0)),
        wall_seconds=float(walls[len(walls) // 2]) if walls else 0.0,
        records=len(rows),
    )


def _replicate_shift(rows: list, ok: np.ndarray, a: np.ndarray, noise: np.ndarray) -> float:
    """Residuals hold the model's misfit as well as noise. Where genomes were evaluated more
    than once, their spread is noise alone: scale the noise model to match it."""
    groups: dict[str, list[int]] = {}
    for i, (x, _) in enumerate(rows):
        if ok[i]:
            groups.setdefault(x.tobytes(), []).append(i)
    within, predicted = [], []
    for members in groups.values():
        if len(members) >= 2:
            values = [rows[i][1]["val_bpb"] for i in members]
            within.append(float(np.var(values, ddof=1)))
            predicted.append(float(np.exp(2 * (a[members[0]] @ noise))))
    if not within:
        return 0.0
    return 0.5 * math.log(max(sum(within), 1e-12) / sum(predicted))


def samples_from_runs(run_dirs: Iterable[str | Path]) -> tuple[list[tuple[str, dict]], str]:
    """(source, result) of every val evaluation in the given runs, and their first seed genome."""
    from evolve.archive import RunArchive

    samples, reference = [], None
    for run_dir in run_dirs:
        with RunArchive.open(run_dir) as archive:
            reference = reference or archive.genome_source(archive.config["seeds"][0])
            for record in archive.evaluations():
                if record.sealed or record.status.infrastructure:
                    continue
                samples.append((archive.genome_source(record.genome), record.result.to_dict()))
    if reference is None:
        raise ValueError("no run given")
    return samples, reference


class SurrogateExecutor:
    """The Executor contract, answered at once by a Surrogate (a log line per evaluation)."""

    def __init__(self, surrogate: Surrogate, slots: int = 2) -> None:
        self.surrogate = surrogate
        self.slots = [f"surrogate{i}" for i in range(slots)]
        self.hardware_class = "surrogate"
        self.notes: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()

    def slot_classes(self) -> dict[str, str]:
        return {slot: self.hardware_class for slot in self.slots}

    def submit(self, request: EvalRequest) -> Future[EvalResult]:
        result = self.surrogate.sample(request.source, request.seed)
        result.split = request.split
        result.slot = self.slots[0]
        result.log_path = str(request.log_path)
        Path(request.log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(request.log_path).write_text(f"surrogate evaluation: {result.status}\n")
        with self._lock:
            self.calls += 1
        future: Future[EvalResult] = Future()
        future.set_result(result)
        return future

    def busy(self) -> dict[str, str]:
        return {}

    def shutdown(self) -> None:
        pass
