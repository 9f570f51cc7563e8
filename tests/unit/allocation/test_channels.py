"""Allocation over channel groups: policies, caps, minimums, rounding, ranking, landing on targets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.allocation.channels import (
    AllocationConfig,
    GroupScores,
    fixed_channels,
    global_counts,
    global_order,
    kept_units,
    layerwise_counts,
    normalized,
    rounded_counts,
    search,
)
from secateurs.allocation.search import bisect
from secateurs.errors import StructureError
from secateurs.models import build_model
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import channel_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def group(name: str, scores: list[float], sizes: list[int] | None = None) -> GroupScores:
    return GroupScores(
        name,
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(sizes or [1] * len(scores), dtype=torch.long),
    )


def removed_channels(groups: list[GroupScores], counts: list[int]) -> list[int]:
    return [int(g.sizes[~m].sum()) for g, m in zip(groups, kept_units(groups, counts), strict=True)]


def test_global_ranking_takes_the_lowest_scores_across_groups() -> None:
    groups = [group("a", [5.0, 1.0, 3.0]), group("b", [2.0, 4.0, 0.5, 6.0])]
    config = AllocationConfig(max_layer_ratio=1.0)
    order = global_order(groups, config)
    counts = global_counts(groups, order, 3)  # 0.5 (b), 1.0 (a), 2.0 (b)
    assert counts == [1, 2]
    masks = kept_units(groups, counts)  # True = kept
    assert masks[0].tolist() == [True, False, True]
    assert masks[1].tolist() == [False, True, False, True]


def test_cap_keeps_five_percent_and_min_channels() -> None:
    thin = group("thin", [0.0] * 20)
    config = AllocationConfig(max_layer_ratio=0.95, min_channels=1)
    order = global_order([thin], config)
    assert len(order) == 19  # floor(0.95 · 20) = 19
    config = AllocationConfig(max_layer_ratio=0.95, min_channels=4)
    assert len(global_order([thin], config)) == 16


def test_layerwise_removes_the_same_fraction_of_every_group() -> None:
    groups = [group("a", list(range(10))), group("b", list(range(40)))]
    counts = layerwise_counts(groups, 0.5, AllocationConfig(scope="layerwise"))
    assert counts == [5, 20]


def test_round_to_keeps_multiples_where_possible() -> None:
    groups = [group("a", list(range(64)))]
    config = AllocationConfig(round_to=8)
    assert rounded_counts(groups, [13], config) == [16]  # keep 51 → 48
    assert rounded_counts(groups, [11], config) == [8]  # keep 53 → 56


scores_strategy = st.lists(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=24), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(
    scores=scores_strategy,
    ratio=st.floats(0.0, 0.99),
    cap=st.floats(0.05, 1.0),
    minimum=st.integers(1, 5),
    round_to=st.integers(1, 8),
    scope=st.sampled_from(["global", "layerwise"]),
)
def test_allocation_respects_cap_minimum_and_rounding(
    scores: list[list[float]], ratio: float, cap: float, minimum: int, round_to: int, scope: str
) -> None:
    groups = [group(f"g{i}", s) for i, s in enumerate(scores)]
    config = AllocationConfig(scope=scope, max_layer_ratio=cap, min_channels=minimum, round_to=round_to)
    allocation = fixed_channels(groups, ratio, config)
    for g, count, kept in zip(groups, allocation.counts, allocation.kept, strict=True):
        mask = ~kept
        removed = int(mask.sum())
        assert removed == count
        assert removed <= math.floor(cap * g.channels + 1e-9)
        assert g.channels - removed >= min(minimum, g.channels)
        # the removed units are the lowest-scored ones of their group
        if 0 < removed < g.channels:
            assert g.scores[mask].max() <= g.scores[~mask].min()
        # rounding: when a multiple of round_to is reachable within the limits, the kept count is one
        kept = g.channels - removed
        limit = min(math.floor(cap * g.channels + 1e-9), g.channels - minimum)
        reachable = [k for k in range(g.channels - max(limit, 0), g.channels + 1) if k % round_to == 0]
        if round_to > 1 and reachable and removed > 0:
            assert kept % round_to == 0


@settings(max_examples=40, deadline=None)
@given(scores=scores_strategy, first=st.integers(0, 60), second=st.integers(0, 60))
def test_global_removal_is_nested(scores: list[list[float]], first: int, second: int) -> None:
    groups = [group(f"g{i}", s) for i, s in enumerate(scores)]
    order = global_order(groups, AllocationConfig())
    small, large = sorted((first, second))
    for a, b in zip(global_counts(groups, order, small), global_counts(groups, order, large), strict=True):
        assert a <= b


def test_tied_units_are_removed_whole() -> None:
    groups = [group("tied", [1.0, 3.0, 2.0], sizes=[4, 4, 4])]
    allocation = fixed_channels(groups, 0.5, AllocationConfig(max_layer_ratio=1.0))
    assert removed_channels(groups, allocation.counts) == [4]  # ⌊0.5·12⌋ = 6 → one whole unit of 4


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_params_target_is_hit_within_one_channel(target: float) -> None:
    model = build_model("resnet20", (1, 8, 8), 10)
    graph = channel_graph(model, torch.zeros(2, 1, 8, 8))
    groups = graph.prunable()
    generator = torch.Generator().manual_seed(0)
    specs = [GroupScores(g.root, torch.rand(g.unit_count, generator=generator), g.unit_sizes()) for g in groups]
    sizes = SizeModel(graph, (1, 8, 8))

    def kept(masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {g.root: g.channels_of_units(m) for g, m in zip(groups, masks, strict=True)}

    def cost(masks: list[torch.Tensor]) -> float:
        return sizes.removed_fraction(kept(masks), quantity="params")

    allocation = search(specs, target, AllocationConfig(), cost, quantity="params")
    achieved = 1.0 - sizes.size(kept(allocation.kept), {}).params / sizes.original.params
    assert achieved == pytest.approx(allocation.achieved)
    # "one channel's worth": the most parameters any single channel removal takes away
    one_channel = max(
        sizes.original.params - sizes.size({g.root: torch.arange(g.channels) != 0}, {}).params for g in groups
    )
    assert abs(achieved - target) <= one_channel / sizes.original.params


def test_unreachable_target_names_the_limit() -> None:
    groups = [group("a", [1.0, 2.0, 3.0, 4.0])]
    with pytest.raises(
        StructureError, match=r"cannot remove 0\.9000 of the params: at most 0\.7500.*\(at their limit: a\)"
    ):
        search(groups, 0.9, AllocationConfig(), lambda masks: float((~masks[0]).sum()) / 4, quantity="params")


# ------------------------------------------------------------------------------------------ policies
# Three groups on different scales; "mid" has two units of two tied channels. 12 channels in all.
BIG = group("big", [22.0, 19.0, 52.0, 70.0])  # mean 40.75, ‖·‖₂ = √8449 ≈ 91.92
SMALL = group("small", [5.0, 9.0, 3.0, 5.0])  # mean 5.5, ‖·‖₂ = √140 ≈ 11.83
MID = group("mid", [6.0, 2.0], sizes=[2, 2])  # mean 4, ‖·‖₂ = √40 ≈ 6.325
POLICY_GROUPS = [BIG, SMALL, MID]
NO_CAP = {"max_layer_ratio": 1.0, "min_channels": 1}  # at most 3 channels of 4 per group


def removed_per_group(allocation_config: AllocationConfig, fraction: float) -> list[int]:
    return removed_channels(POLICY_GROUPS, fixed_channels(POLICY_GROUPS, fraction, allocation_config).counts)


def test_normalized_scores_are_divided_by_each_groups_mean_or_norm() -> None:
    mean = normalized(POLICY_GROUPS, "mean")
    assert torch.allclose(mean[0].scores, torch.tensor([22.0, 19.0, 52.0, 70.0], dtype=torch.float64) / 40.75)
    assert mean[2].scores.tolist() == [1.5, 0.5]
    l2 = normalized(POLICY_GROUPS, "l2")
    assert torch.allclose(l2[1].scores, torch.tensor([5.0, 9.0, 3.0, 5.0], dtype=torch.float64) / math.sqrt(140))
    assert all(torch.equal(a.sizes, b.sizes) for a, b in zip(l2, POLICY_GROUPS, strict=True))
    (flat,) = normalized([group("zero", [-1.0, 1.0])], "mean")  # a statistic ≤ 0 leaves the scores alone
    assert flat.scores.tolist() == [-1.0, 1.0]


def test_each_policy_removes_the_hand_computed_channels() -> None:
    # a third of the channels: ⌊12/3⌋ = 4 go, lowest first, while whole units fit
    # global, raw scores: mid 2 (2 channels), small 3, small 5 → small 2, mid 2
    assert removed_per_group(AllocationConfig(scope="global", **NO_CAP), 1 / 3) == [0, 2, 2]
    # layerwise: ⌊4/3⌋ = 1 per group; mid's units are 2 channels wide, so it loses none
    assert removed_per_group(AllocationConfig(scope="layerwise", **NO_CAP), 1 / 3) == [1, 1, 0]
    # normalized by the mean: big 19/40.75 = 0.466, mid 2/4 = 0.5 (2), big 22/40.75 = 0.540 (small's
    # lowest is 3/5.5 = 0.545)
    assert removed_per_group(AllocationConfig(scope="normalized", normalizer="mean", **NO_CAP), 1 / 3) == [2, 0, 2]
    # normalized by the L2 norm: big 19/91.92 = 0.207, big 22/91.92 = 0.239, small 3/11.83 = 0.254, then
    # mid 2/6.325 = 0.316 would be channels 4 and 5: stop at 3
    assert removed_per_group(AllocationConfig(scope="normalized", normalizer="l2", **NO_CAP), 1 / 3) == [2, 1, 0]


def test_normalized_search_ranks_on_the_normalized_scores() -> None:
    def channels_removed(masks: list[torch.Tensor]) -> float:
        return sum(int(g.sizes[~m].sum()) for g, m in zip(POLICY_GROUPS, masks, strict=True)) / 12

    plain = search(POLICY_GROUPS, 4 / 12, AllocationConfig(scope="global", **NO_CAP), channels_removed, quantity="c")
    assert removed_channels(POLICY_GROUPS, plain.counts) == [0, 2, 2] and plain.achieved == 4 / 12
    scaled = search(
        POLICY_GROUPS, 4 / 12, AllocationConfig(scope="normalized", **NO_CAP), channels_removed, quantity="c"
    )
    assert removed_channels(POLICY_GROUPS, scaled.counts) == [2, 0, 2] and scaled.achieved == 4 / 12
    assert [m.tolist() for m in scaled.kept] == [[False, False, True, True], [True] * 4, [True, False]]


def test_bisect_returns_the_closest_end_and_prefers_the_smaller_removal() -> None:
    calls: list[float] = []

    def evaluate(position: float) -> float:
        calls.append(position)
        return position / 10  # the fraction removed grows linearly: 0.0 … 1.0

    result = bisect(evaluate, lambda v: v, 0.33, (0.0, 0.0), (10.0, 1.0), steps=10, resolution=0, integer=True)
    assert result == (3.0, 0.3)  # 0.3 and 0.4 bracket 0.33; 0.3 is closer
    assert calls == [5.0, 2.0, 3.0, 4.0]  # floor midpoints until the ends are 1 apart
    # 0.25 and 0.5 are exactly as far from 0.375: the smaller removal wins
    position, value = bisect(
        lambda p: math.floor(p * 4) / 4, lambda v: v, 0.375, (0.0, 0.0), (1.0, 1.0), steps=60, resolution=1e-9
    )
    assert value == 0.25 and 0.5 - 1e-9 < position < 0.5
    # an end that already reaches the target is returned without any evaluation
    calls.clear()
    assert bisect(evaluate, lambda v: v, 0.0, (0.0, 0.0), (10.0, 1.0), steps=5, resolution=0) == (0.0, 0.0)
    assert calls == []
