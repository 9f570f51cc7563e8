"""Sparsity schedules: Zhu & Gupta's cubic schedule, LAP's geometric grid, per-round rates."""

from __future__ import annotations

import itertools

import pytest

from secateurs.errors import UsageError
from secateurs.models import build_model
from secateurs.sparsity.schedules import CubicSchedule, geometric_sparsity, per_round_rate
from secateurs.sparsity.targets import prunable_names

SCHEDULE = CubicSchedule(final=0.9, start=100, end=1100, every=100)


def test_cubic_endpoints_are_exact() -> None:
    assert SCHEDULE.sparsity(0) == 0.0
    assert SCHEDULE.sparsity(100) == 0.0
    assert SCHEDULE.sparsity(1100) == 0.9
    assert SCHEDULE.sparsity(10**6) == 0.9
    shifted = CubicSchedule(final=0.95, start=0, end=7, every=1, initial=0.5)
    assert shifted.sparsity(0) == 0.5 and shifted.sparsity(7) == 0.95


def test_cubic_formula_at_hand_computed_points() -> None:
    # t = 600: progress ½, s = 0.9 + (0 − 0.9)·(½)³ = 0.9 − 0.1125 = 0.7875
    assert SCHEDULE.sparsity(600) == pytest.approx(0.7875, abs=1e-15)
    # t = 350: progress ¼, s = 0.9 − 0.9·(¾)³ = 0.9 − 0.3796875 = 0.5203125
    assert SCHEDULE.sparsity(350) == pytest.approx(0.5203125, abs=1e-15)
    # s_i = 0.5, s_f = 0.95, t₀ = 0, t_end = 7, t = 1: 0.95 − 0.45·(6/7)³
    shifted = CubicSchedule(final=0.95, start=0, end=7, every=1, initial=0.5)
    assert shifted.sparsity(1) == pytest.approx(0.95 - 0.45 * (6 / 7) ** 3, abs=1e-15)


def test_cubic_is_monotone_and_front_loaded() -> None:
    values = [SCHEDULE.sparsity(step) for step in range(0, 1300)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    # the cubic removes most weights early: the first half of the span reaches 87.5 % of the final target
    assert SCHEDULE.sparsity(600) / 0.9 == pytest.approx(0.875, abs=1e-12)
    increments = [values[i + 1] - values[i] for i in range(100, 1099)]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(increments))


def test_cubic_update_steps() -> None:
    updates = [step for step in range(0, 2000) if SCHEDULE.is_update_step(step)]
    assert updates == list(range(100, 1101, 100))
    ragged = CubicSchedule(final=0.5, start=0, end=10, every=4)
    assert [step for step in range(20) if ragged.is_update_step(step)] == [0, 4, 8, 10]


def test_cubic_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match=r"final sparsity must be in \[0, 1\)"):
        CubicSchedule(final=1.0, start=0, end=10, every=1)
    with pytest.raises(UsageError, match=r"initial sparsity must be in \[0, 1\)"):
        CubicSchedule(final=0.5, start=0, end=10, every=1, initial=-0.1)
    with pytest.raises(UsageError, match="schedule start must be ≥ 0, got -1"):
        CubicSchedule(final=0.5, start=-1, end=10, every=1)
    with pytest.raises(UsageError, match=r"schedule end \(10\) must come after start \(10\)"):
        CubicSchedule(final=0.5, start=10, end=10, every=1)
    with pytest.raises(UsageError, match="mask update interval must be ≥ 1 step, got 0"):
        CubicSchedule(final=0.5, start=0, end=10, every=0)


def test_geometric_grid_of_lap() -> None:
    # one layer at rate ½: it = 4 … 10 leaves 6.25 %, 3.125 %, … of the weights
    remaining = [100 * (1 - geometric_sparsity(0.5, it)) for it in range(4, 11)]
    assert remaining == [6.25, 3.125, 1.5625, 0.78125, 0.390625, 0.1953125, 0.09765625]
    assert geometric_sparsity(0.5, 0) == 0.0
    assert geometric_sparsity(0.2, 1) == pytest.approx(0.2, abs=1e-15)
    assert geometric_sparsity(0.15, 2) == pytest.approx(1 - 0.85**2, abs=1e-15)


def test_mlp_grid_of_methods_section_1_4() -> None:
    model = build_model("mlp-lap", (1, 28, 28), 10)
    sizes = [model.get_parameter(name).numel() for name in prunable_names(model)]
    assert sizes == [784 * 500, 500 * 500, 500 * 500, 500 * 500, 500 * 10]
    assert sum(sizes) == 1_147_000
    rates = [0.5, 0.5, 0.5, 0.5, 0.25]
    grid = []
    for it in range(4, 11):
        kept = sum(size * (1 - geometric_sparsity(rate, it)) for size, rate in zip(sizes, rates, strict=True))
        grid.append(round(100 * kept / sum(sizes), 2))
    assert grid == [6.36, 3.21, 1.63, 0.84, 0.43, 0.23, 0.12]


def test_per_round_rate_round_trip() -> None:
    assert per_round_rate(0.75, 2) == pytest.approx(0.5, abs=1e-15)
    assert per_round_rate(0.9, 1) == pytest.approx(0.9, abs=1e-15)
    for final in (0.0, 0.5, 0.9, 0.99, 0.998):
        for rounds in (1, 3, 10, 30):
            rate = per_round_rate(final, rounds)
            assert 0.0 <= rate <= final
            assert geometric_sparsity(rate, rounds) == pytest.approx(final, abs=1e-12)


def test_geometric_and_rate_reject_bad_arguments() -> None:
    with pytest.raises(UsageError, match=r"per-round rate must be in \[0, 1\)"):
        geometric_sparsity(1.0, 3)
    with pytest.raises(UsageError, match="rounds must be ≥ 0, got -1"):
        geometric_sparsity(0.5, -1)
    with pytest.raises(UsageError, match=r"final sparsity must be in \[0, 1\)"):
        per_round_rate(1.2, 3)
    with pytest.raises(UsageError, match="rounds must be ≥ 1, got 0"):
        per_round_rate(0.5, 0)
