"""Allocation (layer-wise / global) and granularities (element / filter) against hand-computed masks,
plus hypothesis properties: exact kept counts, kept ≥ removed, nested masks as sparsity grows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.allocation.elements import check_sparsity, normalize_scores, select, select_layerwise
from secateurs.errors import UsageError
from secateurs.sparsity.granularity import GRANULARITIES, granularity, keep_count

ELEMENT = granularity("element")
FILTER = granularity("filter")


def as_int(mask: torch.Tensor) -> list[int] | list[list[int]]:
    result: list[int] | list[list[int]] = mask.int().tolist()
    return result


# ------------------------------------------------------------------------------------ the keep rule
@pytest.mark.parametrize(
    ("units", "sparsity", "min_keep", "expected"),
    [
        (10, 0.5, 1, 5),
        (10, 0.25, 1, 8),  # round(7.5) = 8 (banker's rounding of .5 goes to even)
        (10, 0.35, 1, 6),  # round(6.5) = 6
        (10, 0.99, 1, 1),  # round(0.1) = 0 → min_keep
        (10, 0.99, 0, 0),
        (10, 0.99, 3, 3),
        (3, 0.0, 5, 3),  # never more than the units
        (266_200, 0.9, 1, 26_620),
    ],
)
def test_keep_count(units: int, sparsity: float, min_keep: int, expected: int) -> None:
    assert keep_count(units, sparsity, min_keep) == expected


# ---------------------------------------------------------------------------- hand-computed masks
def test_layerwise_element_hand_computed() -> None:
    scores = torch.tensor([[0.3, -0.1, 0.5], [0.2, 0.9, 0.0]])
    masks = select({"w": scores}, 0.5, ELEMENT)
    assert as_int(masks["w"]) == [[1, 0, 1], [0, 1, 0]]
    assert masks["w"].dtype == torch.bool
    assert as_int(select({"w": scores}, 0.0, ELEMENT)["w"]) == [[1, 1, 1], [1, 1, 1]]
    assert as_int(select({"w": scores}, 0.9, ELEMENT)["w"]) == [[0, 0, 0], [0, 1, 0]]  # round(0.6)=1


def test_layerwise_filter_hand_computed() -> None:
    # rows sum to 1, 5, 3, 2: at 50 % rows 1 and 2 survive, whole rows
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    masks = select({"w": scores}, 0.5, FILTER)
    assert as_int(masks["w"]) == [[0, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]]
    conv_scores = torch.arange(24, dtype=torch.float32).view(4, 3, 2, 1).flip(0)  # filter 0 has the largest sum
    conv_mask = select({"c": conv_scores}, 0.75, FILTER)["c"]
    assert conv_mask.shape == (4, 3, 2, 1)
    assert [bool(conv_mask[o].all()) for o in range(4)] == [True, False, False, False]
    assert int(conv_mask.sum()) == 6


def test_global_element_hand_computed() -> None:
    scores = {"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([2.0, 3.0, 5.0, 0.5])}
    masks = select(scores, 0.5, ELEMENT, scope="global")  # keep 3 of 6: 5, 4, 3
    assert as_int(masks["a"]) == [0, 1]
    assert as_int(masks["b"]) == [0, 1, 1, 0]
    # a layer that would lose everything keeps min_keep units (its best one)
    masks = select({"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([5.0, 6.0, 7.0])}, 0.6, ELEMENT, scope="global")
    assert as_int(masks["a"]) == [0, 1]
    assert as_int(masks["b"]) == [0, 1, 1]
    masks = select(
        {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([5.0, 6.0, 7.0])}, 0.6, ELEMENT, scope="global", min_keep=0
    )
    assert as_int(masks["a"]) == [0, 0]


def test_global_filter_hand_computed() -> None:
    # a: 2 rows of 3 entries (sums 3, 30); b: 3 rows of 2 entries (sums 10, 2, 20); 12 entries, keep 7
    scores = {
        "a": torch.tensor([[1.0, 1.0, 1.0], [10.0, 10.0, 10.0]]),
        "b": torch.tensor([[5.0, 5.0], [1.0, 1.0], [10.0, 10.0]]),
    }
    masks = select(scores, 5 / 12, FILTER, scope="global")
    # order: a1 (30, 3 entries), b2 (20, 2), b0 (10, 2) = 7 entries; a0 (3) would exceed
    assert as_int(masks["a"]) == [[0, 0, 0], [1, 1, 1]]
    assert as_int(masks["b"]) == [[1, 1], [0, 0], [1, 1]]
    # at 50 % the budget is 6: the ranking stops at the first filter that does not fit (b0), 5 kept
    masks = select(scores, 0.5, FILTER, scope="global")
    assert as_int(masks["a"]) == [[0, 0, 0], [1, 1, 1]]
    assert as_int(masks["b"]) == [[0, 0], [0, 0], [1, 1]]


# --------------------------------------------------------------------------------------------- ties
def test_ties_keep_the_lower_index_layerwise_and_global() -> None:
    scores = torch.ones(10)
    for _ in range(3):
        assert as_int(select({"w": scores}, 0.5, ELEMENT)["w"]) == [1] * 5 + [0] * 5
    big = torch.ones(1000)
    assert int(select({"w": big}, 0.5, ELEMENT)["w"][:500].sum()) == 500
    tied = {"a": torch.ones(3), "b": torch.ones(3)}
    masks = select(tied, 0.5, ELEMENT, scope="global", min_keep=0)
    assert as_int(masks["a"]) == [1, 1, 1] and as_int(masks["b"]) == [0, 0, 0]
    masks = select({"w": torch.ones(4, 2)}, 0.5, FILTER)
    assert as_int(masks["w"]) == [[1, 1], [1, 1], [0, 0], [0, 0]]


# ------------------------------------------------------------------------------------- dead entries
def test_dead_entries_never_come_back_layerwise() -> None:
    scores = {"w": torch.arange(8.0)}
    alive = {"w": torch.tensor([1, 1, 0, 0, 0, 0, 0, 0]).bool()}
    # 75 % already removed; a lower target must not revive the high-scoring dead entries 6 and 7
    assert as_int(select(scores, 0.5, ELEMENT, alive=alive)["w"]) == [1, 1, 0, 0, 0, 0, 0, 0]
    assert as_int(select(scores, 0.875, ELEMENT, alive=alive)["w"]) == [0, 1, 0, 0, 0, 0, 0, 0]
    dead = {"w": torch.zeros(8, dtype=torch.bool)}
    assert as_int(select(scores, 0.5, ELEMENT, alive=dead, min_keep=1)["w"]) == [0] * 8
    rows = {"w": torch.tensor([[1.0, 1.0], [9.0, 9.0], [5.0, 5.0]])}
    alive_rows = {"w": torch.tensor([[True, True], [False, True], [True, True]])}  # row 1 partly dead → dead unit
    assert as_int(select(rows, 0.0, FILTER, alive=alive_rows)["w"]) == [[1, 1], [0, 0], [1, 1]]


def test_dead_entries_never_come_back_global() -> None:
    scores = {"a": torch.arange(8.0), "b": torch.arange(4.0)}
    alive = {"a": torch.zeros(8, dtype=torch.bool), "b": torch.tensor([True, True, False, False])}
    masks = select(scores, 0.25, ELEMENT, scope="global", alive=alive, min_keep=1)
    assert as_int(masks["a"]) == [0] * 8
    assert as_int(masks["b"]) == [1, 1, 0, 0]


# ---------------------------------------------------------------------------- budgets and normalising
def test_global_element_keeps_the_budget_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.randn(shape, generator=generator) for name, shape in [("a", (30, 20)), ("b", (7, 3, 3, 3))]}
    total = 600 + 189
    for sparsity in (0.1, 0.5, 0.77, 0.9, 0.99):
        masks = select(scores, sparsity, ELEMENT, scope="global")
        assert sum(int(mask.sum()) for mask in masks.values()) == round((1 - sparsity) * total)


def test_global_filter_keeps_the_budget_within_one_filter() -> None:
    generator = torch.Generator().manual_seed(1)
    shapes = {"a": (16, 3, 3, 3), "b": (12, 16, 3, 3), "c": (10, 48)}
    scores = {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}
    total = sum(torch.Size(shape).numel() for shape in shapes.values())
    largest_filter = max(torch.Size(shape[1:]).numel() for shape in shapes.values())
    for sparsity in (0.2, 0.5, 0.8):
        masks = select(scores, sparsity, FILTER, scope="global", min_keep=0)
        kept = sum(int(mask.sum()) for mask in masks.values())
        budget = round((1 - sparsity) * total)
        assert 0 <= budget - kept < largest_filter
        for name, mask in masks.items():  # whole filters only
            per_filter = mask.reshape(mask.shape[0], -1)
            assert torch.equal(per_filter.all(1), per_filter.any(1)), name


def test_l2_normalisation_equals_dividing_by_each_layer_norm() -> None:
    generator = torch.Generator().manual_seed(2)
    scores = {"a": torch.rand(40, generator=generator) * 100, "b": torch.rand(10, 6, generator=generator)}
    divided = {name: value / value.norm() for name, value in scores.items()}
    for sparsity in (0.3, 0.6, 0.9):
        normalised = select(scores, sparsity, ELEMENT, scope="normalized", normalizer="l2")
        reference = select(divided, sparsity, ELEMENT, scope="global")
        assert all(torch.equal(normalised[name], reference[name]) for name in scores)
    raw = select(scores, 0.7, ELEMENT, scope="global")  # budget 30 < 40 entries of the large-scale layer
    assert int(raw["b"].sum()) == 1  # without normalising, the small-scale layer loses all but min_keep
    assert int(select(scores, 0.7, ELEMENT, scope="normalized", normalizer="l2")["b"].sum()) > 1
    assert torch.allclose(normalize_scores(torch.tensor([3.0, 4.0]), "l2"), torch.tensor([0.6, 0.8]))
    by_own_mean = normalize_scores(torch.tensor([1.0, 3.0, float("-inf")]), "mean")  # mean of the finite ones: 2
    assert by_own_mean.tolist() == [0.5, 1.5, float("-inf")]
    # the mean normalizer: the same as dividing each layer by its mean score
    by_mean = {name: value / value.mean() for name, value in scores.items()}
    for sparsity in (0.3, 0.6):
        normalised = select(scores, sparsity, ELEMENT, scope="normalized", normalizer="mean")
        reference = select(by_mean, sparsity, ELEMENT, scope="global")
        assert all(torch.equal(normalised[name], reference[name]) for name in scores)
    assert torch.equal(normalize_scores(torch.tensor([3.0, float("-inf"), 4.0]), "l2")[1], torch.tensor(float("-inf")))
    assert torch.equal(normalize_scores(torch.zeros(3), "l2"), torch.zeros(3))


def test_per_layer_sparsities() -> None:
    scores = {"a": torch.arange(8.0), "b": torch.arange(4.0)}
    masks = select_layerwise(scores, {"a": 0.5, "b": 0.25}, ELEMENT)
    assert as_int(masks["a"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert as_int(masks["b"]) == [0, 1, 1, 1]


# -------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_the_range_is_a_usage_error(sparsity: float) -> None:
    with pytest.raises(UsageError, match=r"sparsity must be in \[0, 1\) \(the fraction removed\), got"):
        select({"w": torch.ones(4)}, sparsity, ELEMENT)
    with pytest.raises(UsageError, match=r"must be in \[0, 1\)"):
        select({"w": torch.ones(4)}, sparsity, ELEMENT, scope="global")
    with pytest.raises(UsageError, match=r"sparsity of w must be in \[0, 1\)"):
        select({"w": torch.ones(4)}, {"w": sparsity}, ELEMENT)
    assert check_sparsity(0.0) == 0.0


def test_allocation_errors_name_the_accepted_values() -> None:
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    with pytest.raises(UsageError, match="unknown scope 'layer'; accepted: layerwise, global, normalized"):
        select(scores, 0.5, ELEMENT, scope="layer")
    with pytest.raises(UsageError, match="no sparsity given for 'b'; given for: a"):
        select(scores, {"a": 0.5}, ELEMENT)
    with pytest.raises(UsageError, match="scope 'global' takes one sparsity, not one per layer"):
        select(scores, {"a": 0.5, "b": 0.5}, ELEMENT, scope="global")
    with pytest.raises(UsageError, match="unknown score normalisation 'l1'; accepted: none, l2, mean"):
        select(scores, 0.5, ELEMENT, scope="normalized", normalizer="l1")
    with pytest.raises(UsageError, match=r"filter granularity needs a ≥2-D weight; a has shape \(4,\)"):
        select(scores, 0.5, FILTER)
    with pytest.raises(UsageError, match=r"unknown granularity 'row'; accepted: .*element.*filter"):
        granularity("row")


# ------------------------------------------------------------------------------------------ properties
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
sparsities = st.floats(0.0, 0.999, allow_nan=False)


@st.composite
def score_tensors(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    shape = shape if shape is not None else draw(shapes)
    count = torch.Size(shape).numel()
    tied = draw(st.booleans())
    values = st.integers(0, 3).map(float) if tied else st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    return torch.tensor(draw(st.lists(values, min_size=count, max_size=count)), dtype=torch.float64).view(shape)


@st.composite
def score_sets(draw: st.DrawFn, matrices: bool = False) -> dict[str, torch.Tensor]:
    layers = draw(st.integers(1, 3))
    result = {}
    for index in range(layers):
        shape = draw(st.tuples(st.integers(1, 6), st.integers(1, 5))) if matrices else draw(shapes)
        result[f"layer{index}"] = draw(score_tensors(shape))
    return result


@settings(max_examples=60, deadline=None)
@given(scores=score_sets(matrices=True), sparsity=sparsities, min_keep=st.integers(0, 3))
def test_property_layerwise_keeps_keep_count(scores: dict[str, torch.Tensor], sparsity: float, min_keep: int) -> None:
    for grain in (ELEMENT, FILTER):
        masks = select(scores, sparsity, grain, min_keep=min_keep)
        for name, mask in masks.items():
            units = scores[name].shape[0] if grain is FILTER else scores[name].numel()
            unit_size = scores[name].numel() // units
            assert mask.shape == scores[name].shape and mask.dtype == torch.bool
            assert int(mask.sum()) == keep_count(units, sparsity, min_keep) * unit_size


@settings(max_examples=60, deadline=None)
@given(scores=score_sets(), sparsity=sparsities)
def test_property_layerwise_kept_scores_dominate_removed(scores: dict[str, torch.Tensor], sparsity: float) -> None:
    masks = select(scores, sparsity, ELEMENT)
    for name, mask in masks.items():
        kept, removed = scores[name][mask], scores[name][~mask]
        if kept.numel() and removed.numel():
            assert float(kept.min()) >= float(removed.max())


@settings(max_examples=60, deadline=None)
@given(scores=score_sets(), sparsity=sparsities)
def test_property_global_keeps_budget_and_dominates(scores: dict[str, torch.Tensor], sparsity: float) -> None:
    masks = select(scores, sparsity, ELEMENT, scope="global", min_keep=0)
    total = sum(score.numel() for score in scores.values())
    assert sum(int(mask.sum()) for mask in masks.values()) == round((1 - sparsity) * total)
    kept = torch.cat([scores[name][mask] for name, mask in masks.items()])
    removed = torch.cat([scores[name][~mask] for name, mask in masks.items()])
    if kept.numel() and removed.numel():
        assert float(kept.min()) >= float(removed.max())


@settings(max_examples=60, deadline=None)
@given(
    scores=score_sets(matrices=True),
    pair=st.tuples(sparsities, sparsities).map(sorted),
    scope=st.sampled_from(["layerwise", "global"]),
    grain_name=st.sampled_from(["element", "filter"]),
    min_keep=st.integers(0, 2),
)
def test_property_masks_are_nested_as_sparsity_grows(
    scores: dict[str, torch.Tensor], pair: list[float], scope: str, grain_name: str, min_keep: int
) -> None:
    low, high = pair
    grain = GRANULARITIES.get(grain_name)
    looser = select(scores, low, grain, scope=scope, min_keep=min_keep)
    tighter = select(scores, high, grain, scope=scope, min_keep=min_keep)
    for name in scores:
        assert not bool((tighter[name] & ~looser[name]).any()), name
        assert int(tighter[name].sum()) <= int(looser[name].sum())


@settings(max_examples=40, deadline=None)
@given(scores=score_sets(), sparsity=sparsities, scope=st.sampled_from(["layerwise", "global"]), data=st.data())
def test_property_dead_entries_stay_dead(
    scores: dict[str, torch.Tensor], sparsity: float, scope: str, data: st.DataObject
) -> None:
    alive = {
        name: torch.tensor(data.draw(st.lists(st.booleans(), min_size=s.numel(), max_size=s.numel()))).view(s.shape)
        for name, s in scores.items()
    }
    masks = select(scores, sparsity, ELEMENT, scope=scope, alive=alive)
    for name, mask in masks.items():
        assert not bool((mask & ~alive[name]).any())
