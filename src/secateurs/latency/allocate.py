"""Latency-aware allocation: keep the most importance per millisecond.

`allocation.channels` ranks channels by score alone, so the widths it leaves are whatever the scores
dictate, and the MACs it removes may buy little time. Here every group moves on a *width grid*
(kept widths that are multiples of ``step``, or the full width; the cap ``max_layer_ratio`` and
``min_channels`` apply as everywhere) and a greedy search removes, at each step, the move that loses
the least importance per millisecond saved:

    for every group g and every grid width below its current one:
        lost  = sum of the scores of the units between the two widths (lowest scores go first)
        saved = latency(now) − latency(after the move)          (from the measured table)
    take the move with the smallest lost / saved (saved ≤ 0: not a candidate)

until ``cost`` (the fraction of the target quantity removed: latency, MACs, parameters or channels,
a function of per-unit keep-masks) reaches the target. The scores are those the allocation policy
ranks (`allocation.channels.ranked`: normalized per group for scope ``normalized``). Moves may skip
grid widths, so a width whose next step saves nothing (a flat spot of the table) does not block a
larger step that does. When the chosen move reaches the target, the
search instead takes, of all moves that reach it, the one losing the least importance, so the last
step does not overshoot for nothing. Finally, removals the target no longer needs are given back
(the undo restoring the most importance first, as long as the target stays reached).

This is a greedy knapsack (HALP, Shen et al., "Structural Pruning via Latency-Saliency Knapsack",
NeurIPS 2022, https://arxiv.org/abs/2210.06659, solves the same problem with an augmented knapsack
over a latency lookup table); latencies of coupled layers depend on two groups' widths, so each
move is priced on the whole table at the current widths of all other groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from secateurs.allocation.channels import (
    Allocation,
    AllocationConfig,
    CostFn,
    GroupScores,
    ascending,
    kept_units,
    removable_units,
)
from secateurs.errors import StructureError

LatencyFn = Callable[[list[int]], float]
"""Predicted milliseconds when group ``i`` loses ``removed[i]`` channels."""


def grid_counts(group: GroupScores, config: AllocationConfig, step: int) -> list[int]:
    """Unit counts the group may lose (ascending, 0 first) that leave a multiple of ``step`` channels."""
    cumulative = [0, *torch.cumsum(group.sizes[ascending(group)], 0).tolist()]
    counts = [0]
    for count in range(1, removable_units(group, config) + 1):
        if (group.channels - cumulative[count]) % step == 0:
            counts.append(count)
    return counts


def latency_allocation(
    groups: Sequence[GroupScores],
    target: float,
    config: AllocationConfig,
    *,
    step: int,
    latency: LatencyFn,
    cost: CostFn,
    quantity: str,
) -> Allocation:
    """The greedy allocation above; `StructureError` when no move is left before the target."""
    lost_before = [[0.0, *torch.cumsum(g.scores.to(torch.float64)[ascending(g)], 0).tolist()] for g in groups]
    channels_before = [[0, *torch.cumsum(g.sizes[ascending(g)], 0).tolist()] for g in groups]
    options = [grid_counts(g, config, step) for g in groups]
    counts = [0] * len(groups)

    def channels(units: Sequence[int]) -> list[int]:
        return [int(channels_before[i][u]) for i, u in enumerate(units)]

    def achieved(units: list[int]) -> float:
        return cost(kept_units(groups, units))

    now = latency(channels(counts))
    reached = achieved(counts)
    while reached < target - 1e-12:
        moves: list[tuple[float, float, int, int, list[int], float]] = []
        for index, group_options in enumerate(options):
            for count in group_options:
                if count <= counts[index]:
                    continue
                trial = list(counts)
                trial[index] = count
                after = latency(channels(trial))
                saved = now - after
                if saved <= 1e-12:
                    continue
                lost = lost_before[index][count] - lost_before[index][counts[index]]
                moves.append((lost / saved, -saved, index, count, trial, after))
        if not moves:
            raise StructureError(
                f"cannot remove {target:.4f} of the {quantity} on the latency table's width grid (step {step}): "
                f"at most {reached:.4f} with max_layer_ratio={config.max_layer_ratio} and "
                f"min_channels={config.min_channels}"
            )
        moves.sort(key=lambda move: move[:4])
        choice = moves[0]
        result = achieved(choice[4])
        if result >= target - 1e-12:
            finishing = [(move, achieved(move[4])) for move in moves]
            finishing = [(move, value) for move, value in finishing if value >= target - 1e-12]
            choice, result = min(
                finishing,
                key=lambda pair: (
                    lost_before[pair[0][2]][pair[0][3]] - lost_before[pair[0][2]][counts[pair[0][2]]],
                    pair[1],
                ),
            )
        counts, now, reached = choice[4], choice[5], result
    counts, reached = _give_back(counts, reached, target, options, lost_before, achieved)
    return Allocation(counts, kept_units(groups, counts), reached)


def _give_back(
    counts: list[int],
    reached: float,
    target: float,
    options: Sequence[Sequence[int]],
    lost_before: Sequence[Sequence[float]],
    achieved: Callable[[list[int]], float],
) -> tuple[list[int], float]:
    """Undo removals the target no longer needs, the most important first, while it stays reached."""
    while True:
        best: tuple[float, list[int], float] | None = None
        for index, group_options in enumerate(options):
            for count in group_options:
                if count >= counts[index]:
                    break
                trial = list(counts)
                trial[index] = count
                value = achieved(trial)
                gain = lost_before[index][counts[index]] - lost_before[index][count]
                if value >= target - 1e-12 and gain > 0 and (best is None or gain > best[0]):
                    best = (gain, trial, value)
        if best is None:
            return counts, reached
        counts, reached = best[1], best[2]
