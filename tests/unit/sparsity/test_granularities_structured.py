"""Balanced granularities (window, kernel, window+kernel, N:M) and the unit ones (element, filter).

Property-based: for random score tensors and targets, every group keeps the same count, the realised
sparsity equals the documented rounding ``round((1 − s) · G)``, the kept entries are the largest of
their group, and raising the sparsity only removes entries (nested masks).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.allocation.elements import select_global, select_layerwise
from secateurs.errors import UsageError
from secateurs.sparsity.granularities_structured import (
    NOfM,
    from_reduction_groups,
    kernel_scores,
    realised_sparsity,
    reduction_groups,
)
from secateurs.sparsity.granularity import GRANULARITIES, granularity, keep_count

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def conv_scores(draw: st.DrawFn, *, ties: bool = False, kernel: int | None = None) -> torch.Tensor:
    """Score tensors out × in × k × k (k ∈ {2, 3}); with ``ties`` many equal values."""
    out = draw(st.integers(1, 5))
    inputs = draw(st.sampled_from([2, 4, 6, 8]))
    size = kernel or draw(st.sampled_from([2, 3]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    shape = (out, inputs, size, size)
    if ties:
        return torch.randint(0, 4, shape, generator=generator).double()
    return torch.randperm(math.prod(shape), generator=generator).double().reshape(shape)


targets = st.floats(0.0, 0.85)


def _pair(low: float, high: float) -> tuple[float, float]:
    return (low, high) if low <= high else (high, low)


# --------------------------------------------------------------------------------------- window
@SETTINGS
@given(conv_scores(ties=True), targets)
def test_window_keeps_the_same_count_of_the_largest_taps(scores: torch.Tensor, sparsity: float) -> None:
    taps = scores.shape[2] * scores.shape[3]
    keep = round((1 - sparsity) * taps)
    if keep < 1:
        with pytest.raises(UsageError, match="accepted"):
            granularity("window").select(scores, sparsity)
        return
    mask = granularity("window").select(scores, sparsity)
    windows, kept = scores.reshape(-1, taps), mask.reshape(-1, taps)
    assert (kept.sum(dim=1) == keep).all()
    for row, row_mask in zip(windows, kept, strict=True):
        if keep < taps:
            assert row[row_mask].min() >= row[~row_mask].max()
    assert 1 - mask.double().mean().item() == pytest.approx(1 - keep / taps)
    assert realised_sparsity(granularity("window"), scores.shape, sparsity) == pytest.approx(1 - keep / taps)


@SETTINGS
@given(conv_scores(ties=True), targets, targets)
def test_window_masks_are_nested(scores: torch.Tensor, first: float, second: float) -> None:
    low, high = _pair(first, second)
    taps = scores.shape[2] * scores.shape[3]
    if round((1 - high) * taps) < 1:
        return
    dense_side = granularity("window").select(scores, low)
    sparse_side = granularity("window").select(scores, high)
    assert not (sparse_side & ~dense_side).any()


def test_window_on_a_hand_made_kernel() -> None:
    scores = torch.tensor([[5.0, 1.0, 9.0], [2.0, 8.0, 3.0], [7.0, 4.0, 6.0]]).reshape(1, 1, 3, 3)
    mask = granularity("window").select(scores, 2 / 3)
    assert mask.reshape(3, 3).tolist() == [[False, False, True], [False, True, False], [True, False, False]]
    # 70 % cannot be realised on 3×3 windows: it rounds to 3 of 9 kept, i.e. 66.7 %.
    assert realised_sparsity(granularity("window"), scores.shape, 0.7) == pytest.approx(6 / 9)


# --------------------------------------------------------------------------------------- kernel
@SETTINGS
@given(conv_scores(), targets)
def test_kernel_keeps_the_same_count_of_whole_highest_norm_kernels(scores: torch.Tensor, sparsity: float) -> None:
    inputs = scores.shape[1]
    keep = round((1 - sparsity) * inputs)
    if keep < 1:
        with pytest.raises(UsageError, match="accepted"):
            granularity("kernel").select(scores, sparsity)
        return
    mask = granularity("kernel").select(scores, sparsity)
    per_kernel = mask.reshape(*mask.shape[:2], -1)
    assert (per_kernel.all(dim=2) | ~per_kernel.any(dim=2)).all()  # whole kernels
    alive = per_kernel.all(dim=2)
    assert (alive.sum(dim=1) == keep).all()  # the same count in every filter
    norms = scores.sum(dim=(2, 3))
    for row, row_alive in zip(norms, alive, strict=True):
        if keep < inputs:
            assert row[row_alive].min() >= row[~row_alive].max()
    assert realised_sparsity(granularity("kernel"), scores.shape, sparsity) == pytest.approx(1 - keep / inputs)


@SETTINGS
@given(conv_scores(ties=True), targets, targets)
def test_kernel_masks_are_nested(scores: torch.Tensor, first: float, second: float) -> None:
    low, high = _pair(first, second)
    if round((1 - high) * scores.shape[1]) < 1:
        return
    assert not (granularity("kernel").select(scores, high) & ~granularity("kernel").select(scores, low)).any()


def test_kernel_scores_ignore_removed_entries() -> None:
    scores = torch.tensor([[[[1.0, float("-inf")], [2.0, 3.0]], [[float("-inf")] * 2] * 2]])
    assert kernel_scores(scores).tolist() == [[6.0, float("-inf")]]


# -------------------------------------------------------------------------------- window+kernel
@SETTINGS
@given(conv_scores(kernel=3), targets)
def test_window_kernel_splits_the_density_equally(scores: torch.Tensor, sparsity: float) -> None:
    inputs, taps = scores.shape[1], 9
    part = math.sqrt(1 - sparsity)
    keep_kernels, keep_taps = round(part * inputs), round(part * taps)
    if keep_kernels < 1 or keep_taps < 1:
        with pytest.raises(UsageError, match="accepted"):
            granularity("window+kernel").select(scores, sparsity)
        return
    mask = granularity("window+kernel").select(scores, sparsity)
    per_kernel = mask.reshape(*mask.shape[:2], taps).sum(dim=2)
    alive = per_kernel > 0
    assert (alive.sum(dim=1) == keep_kernels).all()
    assert (per_kernel[alive] == keep_taps).all()
    windows = scores.reshape(-1, taps)
    for row, row_mask, row_alive in zip(windows, mask.reshape(-1, taps), alive.reshape(-1), strict=True):
        if row_alive and keep_taps < taps:
            assert row[row_mask].min() >= row[~row_mask].max()
    expected = 1 - keep_kernels * keep_taps / (inputs * taps)
    assert 1 - mask.double().mean().item() == pytest.approx(expected)
    assert realised_sparsity(granularity("window+kernel"), scores.shape, sparsity) == pytest.approx(expected)


@SETTINGS
@given(conv_scores(kernel=3), targets, targets)
def test_window_kernel_masks_are_nested(scores: torch.Tensor, first: float, second: float) -> None:
    low, high = _pair(first, second)
    part = math.sqrt(1 - high)
    if round(part * scores.shape[1]) < 1 or round(part * 9) < 1:
        return
    chosen = granularity("window+kernel")
    assert not (chosen.select(scores, high) & ~chosen.select(scores, low)).any()


def test_window_kernel_on_a_32_input_conv_at_two_thirds() -> None:
    # √(1/3) = 0.577: 18 of 32 kernels, 5 of 9 taps → 1 − 90/288 = 68.75 % realised for a 66.7 % target.
    shape = torch.Size([4, 32, 3, 3])
    assert realised_sparsity(granularity("window+kernel"), shape, 2 / 3) == pytest.approx(1 - 18 * 5 / 288)


# ------------------------------------------------------------------------------------------ N:M
@st.composite
def reduction_scores(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    m = draw(st.sampled_from([2, 3, 4, 8]))
    out = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        shape: tuple[int, ...] = (out, m * draw(st.integers(1, 3)))
    else:
        shape = (out, m * draw(st.integers(1, 2)), 3, 3) if m != 3 else (out, 2, 3, 3)
    return torch.randint(0, 5, shape, generator=generator).double(), m


@SETTINGS
@given(reduction_scores(), targets)
def test_n_of_m_keeps_n_largest_of_every_m_along_the_reduction(case: tuple[torch.Tensor, int], sparsity: float) -> None:
    scores, m = case
    keep = round((1 - sparsity) * m)
    chosen = NOfM(None, m)
    if keep < 1:
        with pytest.raises(UsageError, match="accepted"):
            chosen.select(scores, sparsity)
        return
    mask = chosen.select(scores, sparsity)
    groups, kept = reduction_groups(scores, m), reduction_groups(mask, m)
    assert (kept.sum(dim=1) == keep).all()
    for row, row_mask in zip(groups, kept, strict=True):
        if keep < m:
            assert row[row_mask].min() >= row[~row_mask].max()
    assert realised_sparsity(chosen, scores.shape, sparsity) == pytest.approx(1 - keep / m)


@SETTINGS
@given(reduction_scores(), targets, targets)
def test_n_of_m_masks_are_nested(case: tuple[torch.Tensor, int], first: float, second: float) -> None:
    scores, m = case
    low, high = _pair(first, second)
    if round((1 - high) * m) < 1:
        return
    chosen = NOfM(None, m)
    assert not (chosen.select(scores, high) & ~chosen.select(scores, low)).any()


def test_reduction_groups_follow_kh_kw_cin_order_and_invert() -> None:
    weight = torch.arange(2 * 4 * 3 * 3).reshape(2, 4, 3, 3)
    groups = reduction_groups(weight, 2)
    # the first group: output 0, tap (0, 0), input channels 0 and 1
    assert groups[0].tolist() == [weight[0, 0, 0, 0].item(), weight[0, 1, 0, 0].item()]
    assert torch.equal(from_reduction_groups(groups, weight.shape), weight)


def test_named_pattern_fixes_the_final_target() -> None:
    pattern = granularity("2:4")
    assert isinstance(pattern, NOfM) and (pattern.n, pattern.m) == (2, 4)
    pattern.check_target(0.5)
    with pytest.raises(UsageError, match=r"keeps 2 of every 4 .* accepted \(0.3750, 0.6250\)"):
        pattern.check_target(0.7)
    with pytest.raises(UsageError, match="accepted"):
        pattern.select(torch.rand(4, 8), 0.25)  # 3 of 4 is not 2:4
    relaxed = pattern.schedule_granularity()
    assert isinstance(relaxed, NOfM) and relaxed.n is None and relaxed.m == 4
    assert int(relaxed.select(torch.rand(4, 8), 0.25).sum()) == 24


@pytest.mark.parametrize("name", ["5:4", "0:4"])
def test_impossible_patterns_name_the_accepted_range(name: str) -> None:
    with pytest.raises(UsageError, match="1 ≤ N ≤ M"):
        granularity(name)


def test_m_must_divide_the_reduction() -> None:
    with pytest.raises(UsageError, match="not a multiple of 4"):
        granularity("n:m").check("fc.weight", torch.Size([10, 30]))


# ------------------------------------------------------------------------------- element, filter
@SETTINGS
@given(conv_scores(), targets, targets)
def test_unit_granularities_round_keep_the_largest_and_nest(scores: torch.Tensor, first: float, second: float) -> None:
    low, high = _pair(first, second)
    for name, units in (("element", scores.reshape(-1)), ("filter", scores.sum(dim=(1, 2, 3)))):
        chosen = granularity(name)
        masks = [chosen.select(scores, s) for s in (low, high)]
        keep = keep_count(units.numel(), high)
        unit_mask = chosen.unit_scores(masks[1].double()) > 0 if name == "element" else masks[1][:, 0, 0, 0]
        assert int(unit_mask.sum()) == keep
        if 0 < keep < units.numel():
            assert units[unit_mask.reshape(-1)].min() >= units[~unit_mask.reshape(-1)].max()
        assert realised_sparsity(chosen, scores.shape, high) == pytest.approx(1 - keep / units.numel())
        assert not (masks[1] & ~masks[0]).any()
    # filters are all-or-nothing
    mask = granularity("filter").select(scores, high)
    assert (mask.reshape(mask.shape[0], -1).all(dim=1) | ~mask.reshape(mask.shape[0], -1).any(dim=1)).all()


# -------------------------------------------------------------------------------- registry, errors
def test_registry_holds_every_structured_granularity() -> None:
    assert {"window", "kernel", "window+kernel", "n:m", "element", "filter"} <= set(GRANULARITIES.names())
    for name in ("window", "kernel", "window+kernel", "n:m"):
        assert not GRANULARITIES.get(name).supports_global


def test_balanced_granularities_refuse_global_scope() -> None:
    with pytest.raises(UsageError, match="layerwise"):
        select_global({"w": torch.rand(2, 2, 3, 3)}, 0.5, granularity("window"))


def test_layerwise_selection_respects_removed_entries() -> None:
    scores = torch.arange(18.0).reshape(1, 2, 3, 3)
    alive = torch.ones(1, 2, 3, 3, dtype=torch.bool)
    alive[0, 0, 2, 2] = False  # the largest tap of the first window was removed earlier
    mask = select_layerwise({"w": scores}, 2 / 3, granularity("window"), alive={"w": alive})["w"]
    assert not mask[0, 0, 2, 2] and int(mask[0, 0].sum()) == 3


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("window", (10, 8), "needs a conv weight"),
        ("window", (10, 8, 1, 1), "more than one tap"),
        ("kernel", (10, 8), "needs a conv weight"),
        ("window+kernel", (4, 8, 1, 1), "more than one tap"),
    ],
)
def test_shapes_a_granularity_cannot_cut_are_named(name: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message) as error:
        granularity(name).check("layer.weight", torch.Size(shape))
    assert "N:M" in str(error.value) and "layer.weight" in str(error.value)


def test_unreachable_targets_name_the_accepted_range() -> None:
    with pytest.raises(UsageError, match=r"accepted: \[0, 0.9444\)"):
        granularity("window").select(torch.rand(2, 2, 3, 3), 0.95)
    with pytest.raises(UsageError, match=r"accepted: \[0, 0.8750\)"):
        granularity("kernel").select(torch.rand(2, 4, 3, 3), 0.9)


def test_unknown_names_list_the_accepted_ones() -> None:
    with pytest.raises(UsageError, match=r"accepted: .*window.*N:M"):
        granularity("windows")
