"""How many channels each group loses: global or layer-wise ranking, caps, minimums, rounding.

Pure functions over `GroupScores` (one score and one channel count per *unit*: a channel, or the
channels a grouped convolution ties together). Within a group, units are always removed from the
lowest score up, so an allocation is fully described by how many units each group loses.

* **global**: one ranking over the units of all groups; the ``k`` lowest-scored removable units go.
  HAP (METHODS.md §2.2) ranks globally.
* **layerwise**: every group loses the same fraction ``r`` of its channels (its own ranking).
* **cap** (``max_layer_ratio``, default 0.95): a group never loses more than that fraction of its
  channels, nor so many that fewer than ``min_channels`` remain. Under a global ranking, units past a
  group's cap are simply not candidates (HAP's per-layer fallback to its own 95 % quantile; done
  properly in implant mode too, METHODS.md §2.5 item 10).
* **round_to** N: the kept channel count of every group is rounded to the nearest multiple of N
  that the cap and the minimum allow (where possible: tied units may make it unreachable).

`search` turns a target into an allocation: for ``channels`` the fraction of prunable channels is
given directly; for ``params`` / ``macs`` it bisects ``k`` (global) or ``r`` (layerwise) on a cost
function that returns the fraction removed, and keeps the candidate closest to the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from secateurs.errors import StructureError


@dataclass(frozen=True)
class GroupScores:
    """One prunable group as the allocator sees it."""

    name: str
    scores: torch.Tensor
    """Score per unit (higher = more important)."""
    sizes: torch.Tensor
    """Channels per unit."""

    @property
    def channels(self) -> int:
        return int(self.sizes.sum())


@dataclass(frozen=True)
class AllocationConfig:
    scope: str = "global"
    max_layer_ratio: float = 0.95
    min_channels: int = 1
    round_to: int = 1


def ascending(group: GroupScores) -> torch.Tensor:
    """Unit indices from least to most important (stable: ties keep index order)."""
    return torch.argsort(group.scores.to(torch.float64), stable=True)


def removable_units(group: GroupScores, config: AllocationConfig) -> int:
    """How many of the lowest-scored units may go without breaking the cap or the minimum."""
    limit = min(math.floor(config.max_layer_ratio * group.channels + 1e-9), group.channels - config.min_channels)
    cumulative = torch.cumsum(group.sizes[ascending(group)], 0)
    return int((cumulative <= max(limit, 0)).sum())


def global_order(groups: Sequence[GroupScores], config: AllocationConfig) -> list[tuple[int, int]]:
    """Removal candidates ``(group index, unit rank)`` of all groups, least important first."""
    scores, owners, ranks = [], [], []
    for index, group in enumerate(groups):
        order = ascending(group)[: removable_units(group, config)]
        scores.append(group.scores.to(torch.float64)[order])
        owners += [index] * len(order)
        ranks += list(range(len(order)))
    if not owners:
        return []
    merged = torch.argsort(torch.cat(scores), stable=True).tolist()
    return [(owners[i], ranks[i]) for i in merged]


def global_counts(groups: Sequence[GroupScores], order: Sequence[tuple[int, int]], k: int) -> list[int]:
    """Units lost per group when the first ``k`` candidates of ``order`` go."""
    counts = [0] * len(groups)
    for owner, _ in order[:k]:
        counts[owner] += 1
    return counts


def layerwise_counts(groups: Sequence[GroupScores], ratio: float, config: AllocationConfig) -> list[int]:
    """Units lost per group when each loses (about, never more than) ``ratio`` of its channels."""
    counts = []
    for group in groups:
        wanted = math.floor(ratio * group.channels + 1e-9)
        cumulative = torch.cumsum(group.sizes[ascending(group)], 0)
        units = int((cumulative <= wanted).sum())
        counts.append(min(units, removable_units(group, config)))
    return counts


def rounded_counts(groups: Sequence[GroupScores], counts: Sequence[int], config: AllocationConfig) -> list[int]:
    """Move each group that loses channels to the nearest kept count that is a multiple of ``round_to``.

    Only counts the cap and the minimum allow are considered; a group keeps its count when none of
    them is a multiple (tied units), and a group that loses nothing is left alone.
    """
    if config.round_to <= 1:
        return list(counts)
    result = []
    for group, count in zip(groups, counts, strict=True):
        if count == 0:
            result.append(0)
            continue
        cumulative = [0, *torch.cumsum(group.sizes[ascending(group)], 0).tolist()]
        kept = group.channels - cumulative[count]
        options = [
            candidate
            for candidate in range(removable_units(group, config) + 1)
            if (group.channels - cumulative[candidate]) % config.round_to == 0
        ]
        result.append(min(options, key=lambda c: (abs(group.channels - cumulative[c] - kept), c)) if options else count)
    return result


def removal_masks(groups: Sequence[GroupScores], counts: Sequence[int]) -> list[torch.Tensor]:
    """Boolean removed-mask over each group's units for the given unit counts."""
    masks = []
    for group, count in zip(groups, counts, strict=True):
        mask = torch.zeros(len(group.scores), dtype=torch.bool)
        mask[ascending(group)[:count]] = True
        masks.append(mask)
    return masks


@dataclass(frozen=True)
class Allocation:
    counts: list[int]
    """Units removed per group."""
    masks: list[torch.Tensor]
    """Removed units per group (boolean)."""
    achieved: float
    """Fraction of the target quantity removed."""


CostFn = Callable[[list[torch.Tensor]], float]


def search(
    groups: Sequence[GroupScores],
    target: float,
    config: AllocationConfig,
    cost: CostFn,
    *,
    quantity: str,
) -> Allocation:
    """The allocation whose ``cost`` (fraction removed) is closest to ``target``.

    ``cost`` maps per-group removed-unit masks to the fraction of ``quantity`` removed; it must not
    decrease when more units go. Raises `StructureError` when even the largest allowed removal stays
    below the target.
    """

    def evaluate(counts: list[int]) -> Allocation:
        counts = rounded_counts(groups, counts, config)
        masks = removal_masks(groups, counts)
        return Allocation(counts, masks, cost(masks))

    if config.scope == "global":
        order = global_order(groups, config)
        candidates: Callable[[float], list[int]] = lambda k: global_counts(groups, order, int(k))  # noqa: E731
        low, high, integer = 0.0, float(len(order)), True
    else:
        candidates = lambda ratio: layerwise_counts(groups, ratio, config)  # noqa: E731
        low, high, integer = 0.0, 1.0, False
    most = evaluate(candidates(high))
    if most.achieved < target - 1e-9:
        limited = [g.name for g, c in zip(groups, most.counts, strict=True) if c == removable_units(g, config)]
        raise StructureError(
            f"cannot remove {target:.4f} of the {quantity}: at most {most.achieved:.4f} with max_layer_ratio="
            f"{config.max_layer_ratio} and min_channels={config.min_channels} (at their limit: "
            f"{', '.join(limited[:6])}{' …' if len(limited) > 6 else ''})"
        )
    best = evaluate(candidates(low))
    if best.achieved >= target:
        return best
    for _ in range(64 if not integer else max(1, math.ceil(math.log2(high + 1)) + 1)):
        middle = (low + high) / 2 if not integer else float((int(low) + int(high)) // 2)
        trial = evaluate(candidates(middle))
        if trial.achieved >= target:
            high, most = middle, trial
        else:
            low, best = middle, trial
        if (integer and high - low <= 1) or (not integer and high - low < 1e-9):
            break
    return min((best, most), key=lambda a: (abs(a.achieved - target), a.achieved))


def fixed_channels(groups: Sequence[GroupScores], fraction: float, config: AllocationConfig) -> Allocation:
    """The allocation removing ``fraction`` of all prunable channels (HAP's channel ratio r).

    Global: the ⌊r·N⌋ lowest-scored channels (as many whole candidate units as fit); layerwise: each
    group loses ⌊r·C⌋ of its channels. Caps, minimums and rounding apply as everywhere.
    """
    total = sum(g.channels for g in groups)
    if config.scope == "global":
        order = global_order(groups, config)
        budget = math.floor(fraction * total + 1e-9)
        taken = 0
        k = 0
        for owner, rank in order:
            size = int(groups[owner].sizes[ascending(groups[owner])[rank]])
            if taken + size > budget:
                break
            taken += size
            k += 1
        counts = global_counts(groups, order, k)
    else:
        counts = layerwise_counts(groups, fraction, config)
    counts = rounded_counts(groups, counts, config)
    masks = removal_masks(groups, counts)
    removed = sum(int(g.sizes[m].sum()) for g, m in zip(groups, masks, strict=True))
    return Allocation(counts, masks, removed / total if total else 0.0)
