"""Latency-aware allocation (`latency.allocate`): hand-computed greedy answers on made-up tables."""

from __future__ import annotations

import pytest
import torch

from secateurs.allocation.channels import AllocationConfig, GroupScores
from secateurs.errors import StructureError
from secateurs.latency.allocate import grid_counts, latency_allocation


def group(name: str, scores: list[float], size: int = 1) -> GroupScores:
    return GroupScores(name, torch.tensor(scores, dtype=torch.float64), torch.full((len(scores),), size))


def additive(dense: float, savings: dict[int, dict[int, float]]) -> tuple:
    """A latency function: group i losing c channels saves savings[i][c] ms; the matching cost function."""

    def latency(removed: list[int]) -> float:
        return dense - sum(savings[i].get(c, 0.0) for i, c in enumerate(removed))

    def fraction_for(groups: list[GroupScores]):
        def cost(masks: list[torch.Tensor]) -> float:
            removed = [int(g.sizes[~kept].sum()) for g, kept in zip(groups, masks, strict=True)]
            return 1.0 - latency(removed) / dense

        return cost

    return latency, fraction_for


def test_grid_counts_keep_multiples_of_the_step_within_the_cap() -> None:
    config = AllocationConfig(max_layer_ratio=0.95)
    # 20 channels: kept 16 (4 gone) and 8 (12 gone); kept 0 breaks the cap and the minimum
    assert grid_counts(group("a", list(range(20))), config, 8) == [0, 4, 12]
    # units of 2 tied channels: the same widths, counted in units
    assert grid_counts(group("b", list(range(10)), size=2), config, 8) == [0, 2, 6]
    # a cap of 0.5 allows only kept 16 of 20 (kept 8 would remove 60 %)
    assert grid_counts(group("c", list(range(20))), AllocationConfig(max_layer_ratio=0.5), 8) == [0, 4]


# A: scores 1..16 (lowest 8 sum to 36), B: all 1 (8), C: all 12 (96). Removing 8 channels saves
# 4, 1 and 10 ms of 20. Importance lost per ms: B 8, A 9, C 9.6.
GROUPS = [group("A", [float(s) for s in range(1, 17)]), group("B", [1.0] * 16), group("C", [12.0] * 16)]
SAVINGS = {0: {8: 4.0}, 1: {8: 1.0}, 2: {8: 10.0}}


def test_greedy_takes_the_cheapest_importance_per_millisecond_until_the_target() -> None:
    latency, fraction_for = additive(20.0, SAVINGS)
    # 25 % of 20 ms = 5 ms: B first (ratio 8, saves 1), then the least important move that reaches
    # the target: A (lost 36, reaches 0.25) rather than C (lost 96). Total lost 44 (C alone: 96).
    allocation = latency_allocation(
        GROUPS, 0.25, AllocationConfig(), step=8, latency=latency, cost=fraction_for(GROUPS), quantity="latency"
    )
    assert allocation.counts == [8, 8, 0]
    assert allocation.achieved == pytest.approx(0.25)
    assert allocation.kept[0].tolist() == [False] * 8 + [True] * 8  # the lowest scores of A go


def test_removals_the_target_no_longer_needs_are_given_back() -> None:
    latency, fraction_for = additive(20.0, SAVINGS)
    # 50 %: B (0.05), A (0.25), then only C reaches it (0.75). Giving back A (restores 36) leaves 0.55,
    # then giving back B (restores 8) leaves exactly 0.50: C alone, lost 96.
    allocation = latency_allocation(
        GROUPS, 0.5, AllocationConfig(), step=8, latency=latency, cost=fraction_for(GROUPS), quantity="latency"
    )
    assert allocation.counts == [0, 0, 8]
    assert allocation.achieved == pytest.approx(0.5)


def test_a_flat_step_does_not_block_a_larger_one() -> None:
    # 24 channels, widths 16 and 8: going to 16 saves nothing, going to 8 saves 6 ms of 20
    groups = [group("D", [float(s) for s in range(24)])]
    latency, fraction_for = additive(20.0, {0: {8: 0.0, 16: 6.0}})
    allocation = latency_allocation(
        groups, 0.2, AllocationConfig(), step=8, latency=latency, cost=fraction_for(groups), quantity="latency"
    )
    assert allocation.counts == [16]
    assert allocation.achieved == pytest.approx(0.3)


def test_coupled_latency_prices_each_move_at_the_current_widths() -> None:
    # one layer reading group 0 and writing group 1: ms = in × out / 16 (16×16 → 16 ms)
    groups = [group("in", [1.0] * 16), group("out", [2.0] * 16)]

    def latency(removed: list[int]) -> float:
        return (16 - removed[0]) * (16 - removed[1]) / 16

    def cost(masks: list[torch.Tensor]) -> float:
        return 1.0 - latency([int((~kept).sum()) for kept in masks]) / 16

    # first move: halving "in" loses 8 for 8 ms (ratio 1), halving "out" loses 16 for 8 ms (ratio 2);
    # at 70 % the second move must also halve "out": it now saves only 4 ms (8×8/16 = 4): 75 %.
    allocation = latency_allocation(groups, 0.7, AllocationConfig(), step=8, latency=latency, cost=cost, quantity="l")
    assert allocation.counts == [8, 8]
    assert allocation.achieved == pytest.approx(0.75)
    first = latency_allocation(groups, 0.5, AllocationConfig(), step=8, latency=latency, cost=cost, quantity="l")
    assert first.counts == [8, 0]


def test_an_unreachable_target_names_the_limit() -> None:
    latency, fraction_for = additive(20.0, SAVINGS)
    with pytest.raises(StructureError, match=r"cannot remove 0\.9000 of the latency .* at most 0\.7500"):
        latency_allocation(
            GROUPS, 0.9, AllocationConfig(), step=8, latency=latency, cost=fraction_for(GROUPS), quantity="latency"
        )
