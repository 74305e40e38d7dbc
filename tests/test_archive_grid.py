"""The MAP-Elites grid (fixed bins, clamping, descriptors) and the noise-aware elite rule."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from evolve.archive import (
    Decision,
    Descriptor,
    EliteRule,
    ElitesMap,
    Grid,
    count_code_lines,
    qd_score,
)
from evolve.archive.elites import summarize
from evolve.errors import UserError
from evolve.record import EvalResult

# --- grid -------------------------------------------------------------------------


def test_bins_are_half_open_and_edges_are_exact() -> None:
    d = Descriptor("model_size", 4.0, 9.0, 10)  # width 0.5
    assert d.bin_of(4.0) == 0
    assert d.bin_of(4.4999999) == 0
    assert d.bin_of(4.5) == 1  # an edge belongs to the bin above it
    assert d.bin_of(6.5) == 5
    assert d.bin_of(8.9999) == 9
    code = Descriptor("code_size", 50, 600, 10)  # width 55: float edges must not slip
    for k in range(10):
        assert code.bin_of(50 + 55 * k) == k
        assert code.bin_of(50 + 55 * k - 1e-9) == max(0, k - 1)


def test_values_outside_the_range_clamp_to_edge_bins() -> None:
    d = Descriptor("model_size", 4.0, 9.0, 10)
    assert d.bin_of(9.0) == 9
    assert d.bin_of(1e9) == 9
    assert d.bin_of(-3.0) == 0
    with pytest.raises(ValueError):
        d.bin_of(float("nan"))


TEN_BY_TEN = (Descriptor("model_size", 4.0, 9.0, 10), Descriptor("code_size", 50.0, 600.0, 10))


def test_cell_of_accepts_mapping_or_sequence_and_never_drifts() -> None:
    grid = Grid(TEN_BY_TEN)
    assert grid.shape == (10, 10) and grid.total_cells == 100
    assert grid.cell_of({"model_size": 6.2, "code_size": 120}) == (4, 1)
    assert grid.cell_of([6.2, 120]) == (4, 1)
    # bins are fixed: extreme values seen before do not move later cells
    grid.cell_of([100.0, 1e6])
    assert grid.cell_of([6.2, 120]) == (4, 1)
    with pytest.raises(ValueError):
        grid.cell_of({"model_size": 6.2})
    assert grid.cell_if_known({"model_size": 6.2, "code_size": None}) is None


def test_unknown_descriptor_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as err:
        Descriptor("flops", 0, 1, 4)
    text = str(err.value)
    assert "flops" in text
    for name in ("model_size", "code_size", "tokens", "memory", "steps", "throughput"):
        assert name in text
    with pytest.raises(UserError):
        Grid.from_list([{"name": "nope", "low": 0, "high": 1, "bins": 2}])


def test_bad_ranges_and_duplicate_axes_are_user_errors() -> None:
    with pytest.raises(UserError):
        Descriptor("tokens", 5, 5, 3)
    with pytest.raises(UserError):
        Descriptor("tokens", 1, 5, 0)
    with pytest.raises(UserError):
        Grid([Descriptor("tokens", 1, 5, 2), Descriptor("tokens", 1, 5, 2)])
    with pytest.raises(UserError):
        Grid.from_list([{"name": "tokens", "low": 1}])


def test_descriptors_are_computed_from_result_and_source() -> None:
    source = "# header\n\nimport torch\n   # indented comment\nx = 1  # trailing\n\n\ny = 2\n"
    assert count_code_lines(source) == 3
    result = EvalResult(
        "ok", val_bpb=1.2, params=10**6, tokens=10**8, peak_memory_bytes=2**30,
        steps=1000, training_seconds=100.0,
    )  # fmt: skip
    axes = [
        Descriptor(n, 0, 12, 12)
        for n in ("model_size", "code_size", "tokens", "memory", "steps", "throughput")
    ]
    values = Grid(axes).describe(result, source)
    assert values["model_size"] == pytest.approx(6.0)
    assert values["code_size"] == 3.0
    assert values["tokens"] == pytest.approx(8.0)
    assert values["memory"] == pytest.approx(math.log10(2**30))
    assert values["steps"] == pytest.approx(3.0)
    assert values["throughput"] == pytest.approx(6.0)  # 1e8 tokens / 100 s


def test_failed_result_has_no_cell_when_a_descriptor_is_missing() -> None:
    grid = Grid(TEN_BY_TEN)
    crashed = EvalResult("crashed", reason="boom")
    assert grid.describe(crashed, "x = 1\n")["model_size"] is None
    assert grid.cell_if_known(grid.describe(crashed, "x = 1\n")) is None


def test_grid_round_trips_through_dict() -> None:
    grid = Grid([Descriptor("memory", 6, 11, 5), Descriptor("steps", 1, 5, 8)])
    assert Grid.from_list(grid.to_list()) == grid


# --- noise-aware elites -----------------------------------------------------------------

CELL = (2, 3)


def make_map(noise: float = 0.01, z: float = 2.0, min_margin: float = 0.0) -> ElitesMap:
    return ElitesMap(100, EliteRule(noise_std=noise, z=z, min_margin=min_margin))


def holder(m: ElitesMap, cell: tuple[int, ...]) -> str | None:
    elite = m.elite_at(cell)
    return None if elite is None else elite.genome


def test_margin_formula() -> None:
    rule = EliteRule(noise_std=0.01, z=2.0, min_margin=1e-4)
    assert rule.margin(1, 1) == pytest.approx(2 * 0.01 * math.sqrt(2))
    assert rule.margin(4, 9) == pytest.approx(2 * 0.01 * math.sqrt(1 / 4 + 1 / 9))
    assert EliteRule(noise_std=0.0, min_margin=0.003).margin(1, 1) == 0.003


def test_first_genome_takes_an_empty_cell() -> None:
    m = make_map()
    assert m.add("a", CELL, 1.50, "e1") is Decision.NEW_CELL
    assert holder(m, CELL) == "a" and m.coverage == 0.01


def test_challenger_within_the_margin_is_kept_out() -> None:
    m = make_map(noise=0.01)  # margin for n=1 vs n=1: 0.0283
    m.add("a", CELL, 1.500, "e1")
    assert m.add("b", CELL, 1.480, "e2") is Decision.KEPT_INCUMBENT  # better by 0.020 only
    assert holder(m, CELL) == "a"
    assert m.add("c", CELL, 1.470, "e3") is Decision.REPLACED  # better by 0.030
    assert holder(m, CELL) == "c"


def test_min_margin_applies_when_noise_is_tiny() -> None:
    m = make_map(noise=0.0, min_margin=0.005)
    m.add("a", CELL, 1.500, "e1")
    assert m.add("b", CELL, 1.496, "e2") is Decision.KEPT_INCUMBENT
    assert m.add("c", CELL, 1.494, "e3") is Decision.REPLACED


def test_repeated_evaluations_match_numpy() -> None:
    rng = random.Random(1)
    m = make_map()
    values = [rng.gauss(1.4, 0.05) for _ in range(37)]
    for i, v in enumerate(values):
        decision = m.add("a", CELL, v, f"e{i}")
        assert decision is (Decision.NEW_CELL if i == 0 else Decision.UPDATED)
    (elite,) = m.elites()
    assert elite.n == 37
    assert elite.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert elite.std == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    assert elite.eval_ids == tuple(f"e{i}" for i in range(37))


def test_lucky_incumbent_loses_its_cell_after_re_evaluation() -> None:
    m = make_map(noise=0.01)
    m.add("lucky", CELL, 1.40, "e1")  # one lucky draw
    for i in range(4):
        m.add("solid", CELL, 1.42, f"s{i}")  # kept out: it is worse
    assert holder(m, CELL) == "lucky"
    # the incumbent is re-evaluated: its mean rises to 1.46, solid (n=4) is now better by
    # 0.04 > 2 * 0.01 * sqrt(1/4 + 1/2) = 0.0173
    assert m.add("lucky", CELL, 1.52, "e2") is Decision.REPLACED
    assert holder(m, CELL) == "solid"
    assert m.genomes["lucky"].n == 2 and m.genomes["lucky"].mean == pytest.approx(1.46)


def test_incumbent_update_that_keeps_the_cell_is_updated() -> None:
    m = make_map(noise=0.01)
    m.add("a", CELL, 1.40, "e1")
    m.add("b", CELL, 1.41, "e2")
    assert m.add("a", CELL, 1.41, "e3") is Decision.UPDATED
    assert m.elite_at(CELL).mean == pytest.approx(1.405)


def test_re_evaluated_challenger_can_take_the_cell() -> None:
    m = make_map(noise=0.01)
    m.add("a", CELL, 1.500, "e1")
    # b is better by 0.024; margin = 2 * 0.01 * sqrt(1/n_b + 1/1)
    assert m.add("b", CELL, 1.476, "e2") is Decision.KEPT_INCUMBENT  # n=1: 0.0283
    assert m.add("b", CELL, 1.476, "e3") is Decision.KEPT_INCUMBENT  # n=2: 0.0245
    assert m.add("b", CELL, 1.476, "e4") is Decision.REPLACED  # n=3: 0.0231
    assert holder(m, CELL) == "b"


def test_a_genome_keeps_the_cell_of_its_first_evaluation() -> None:
    m = make_map()
    m.add("a", (0, 0), 1.5, "e1")
    m.add("a", (5, 5), 1.4, "e2")  # e.g. a throughput descriptor that moved
    assert holder(m, (5, 5)) is None
    assert m.elite_at((0, 0)).n == 2


def test_changing_the_noise_replays_the_decisions() -> None:
    m = make_map(noise=0.01)
    m.add("a", CELL, 1.500, "e1")
    m.add("b", CELL, 1.490, "e2")
    assert holder(m, CELL) == "a"
    m.set_rule(replace(m.rule, noise_std=0.001))  # margin 0.0028 < 0.01
    assert holder(m, CELL) == "b"
    m.forget(["e2"])
    assert holder(m, CELL) == "a" and "b" not in m.genomes


def test_qd_score_coverage_best_and_mean() -> None:
    m = ElitesMap(100, EliteRule(offset=10.0, confirm_n=3))
    m.add("a", (0, 0), 1.0, "e1")  # best mean but only one evaluation
    for i, v in enumerate((1.2, 1.3, 1.1)):
        m.add("b", (0, 1), v, f"b{i}")
    m.add("c", (1, 1), 12.0, "e5")  # worse than the offset: contributes 0, not negative
    assert m.coverage == pytest.approx(0.03)
    assert qd_score(m.elites(), m.rule.offset) == pytest.approx((10 - 1.0) + (10 - 1.2) + 0.0)
    assert qd_score(m.elites(), offset=20.0) == pytest.approx(19 + 18.8 + 8)
    assert m.best().genome == "b"  # confirmed (n >= 3) beats a single lucky draw
    summary = summarize(m.elites(), m.total_cells, m.rule)
    assert summary["best"] == pytest.approx(1.2)
    assert summary["mean"] == pytest.approx((1.0 + 1.2 + 12.0) / 3)
    assert ElitesMap(100).best() is None


def test_non_finite_bpb_is_refused() -> None:
    with pytest.raises(ValueError):
        make_map().add("a", CELL, float("nan"), "e1")
