"""How many channels each group keeps: the allocation policies, caps, minimums, rounding.

Pure functions over `GroupScores` (one score and one channel count per *unit*: a channel, or the
channels a grouped convolution ties together). Within a group, units are always removed from the
lowest score up, so an allocation is fully described by how many units each group loses; its masks
are per unit, True = kept (`kept_units`).

Policies (``scope``):

* **global**: one ranking over the units of all groups; the ``k`` lowest-scored removable units go.
  HAP (METHODS.md §2.2) ranks globally.
* **layerwise**: every group loses the same fraction ``r`` of its channels (its own ranking).
* **normalized**: each group's unit scores are divided by a statistic of that group's unit scores
  (``normalizer``: ``mean``, Torch-Pruning's default, or ``l2``, the norm), then one global ranking, so
  layers whose scores live on different scales compete on their relative importance. A statistic
  that is not positive leaves the group's scores as they are (dividing by it would reverse or
  break their order).

Limits, under every policy:

* **cap** (``max_layer_ratio``, default 0.95): a group never loses more than that fraction of its
  channels, nor so many that fewer than ``min_channels`` remain. Under a global ranking, units past a
  group's cap are simply not candidates (HAP's per-layer fallback to its own 95 % quantile; done
  properly in implant mode too, METHODS.md §2.5 item 10).
* **round_to** N: the kept channel count of every group is rounded to the nearest multiple of N
  that the cap and the minimum allow (where possible: tied units may make it unreachable).

`search` turns a target into an allocation: for ``channels`` the fraction of prunable channels is
given directly (`fixed_channels`); for ``params`` / ``macs`` it bisects ``k`` (global, normalized) or
``r`` (layerwise) with `allocation.search.bisect` on a cost function that returns the fraction
removed, and keeps the candidate closest to the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from secateurs.allocation.search import bisect
from secateurs.errors import StructureError

Scope = Literal["global", "layerwise", "normalized"]
Normalizer = Literal["mean", "l2"]
NORMALIZERS: tuple[Normalizer, ...] = ("mean", "l2")


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
    scope: Scope = "global"
    max_layer_ratio: float = 0.95
    min_channels: int = 1
    round_to: int = 1
    normalizer: Normalizer = "mean"
    """The per-group statistic of scope ``normalized``."""


def normalized(groups: Sequence[GroupScores], normalizer: Normalizer) -> list[GroupScores]:
    """Each group's unit scores divided by their mean (``mean``) or L2 norm (``l2``), when positive."""
    result = []
    for group in groups:
        scores = group.scores.to(torch.float64)
        if normalizer == "mean":
            statistic = scores.mean() if scores.numel() else torch.tensor(0.0, dtype=torch.float64)
        elif normalizer == "l2":
            statistic = scores.norm()
        else:
            raise StructureError(f"unknown normalizer {normalizer!r}; accepted: {', '.join(NORMALIZERS)}")
        if bool(statistic > 0) and math.isfinite(float(statistic)):
            scores = scores / statistic
        result.append(replace(group, scores=scores))
    return result


def ranked(groups: Sequence[GroupScores], config: AllocationConfig) -> list[GroupScores]:
    """The scores the policy ranks: normalized for scope ``normalized``, as given otherwise."""
    return normalized(groups, config.normalizer) if config.scope == "normalized" else list(groups)


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


def kept_units(groups: Sequence[GroupScores], counts: Sequence[int]) -> list[torch.Tensor]:
    """Keep-mask over each group's units (True = kept) when group i loses its ``counts[i]`` lowest units."""
    masks = []
    for group, count in zip(groups, counts, strict=True):
        mask = torch.ones(len(group.scores), dtype=torch.bool)
        mask[ascending(group)[:count]] = False
        masks.append(mask)
    return masks


def removed_channels(groups: Sequence[GroupScores], kept: Sequence[torch.Tensor]) -> int:
    """Channels the keep-masks ``kept`` (per unit) remove, over all groups."""
    return sum(int(group.sizes[~mask].sum()) for group, mask in zip(groups, kept, strict=True))


@dataclass(frozen=True)
class Allocation:
    counts: list[int]
    """Units removed per group."""
    kept: list[torch.Tensor]
    """Kept units per group (boolean, True = kept)."""
    achieved: float
    """Fraction of the target quantity removed."""


CostFn = Callable[[list[torch.Tensor]], float]
"""Per-group unit keep-masks → the fraction of the target quantity they remove (never decreasing
as more units go)."""


def search(
    groups: Sequence[GroupScores],
    target: float,
    config: AllocationConfig,
    cost: CostFn,
    *,
    quantity: str,
) -> Allocation:
    """The allocation whose ``cost`` (fraction removed) is closest to ``target``.

    Raises `StructureError` when even the largest allowed removal stays below the target.
    """
    groups = ranked(groups, config)

    def evaluate(counts: list[int]) -> Allocation:
        counts = rounded_counts(groups, counts, config)
        masks = kept_units(groups, counts)
        return Allocation(counts, masks, cost(masks))

    candidates: Callable[[float], list[int]]
    if config.scope == "layerwise":
        candidates = lambda ratio: layerwise_counts(groups, ratio, config)  # noqa: E731
        low, high, integer = 0.0, 1.0, False
    else:
        order = global_order(groups, config)
        candidates = lambda k: global_counts(groups, order, int(k))  # noqa: E731
        low, high, integer = 0.0, float(len(order)), True
    most = evaluate(candidates(high))
    if most.achieved < target - 1e-9:
        limited = [g.name for g, c in zip(groups, most.counts, strict=True) if c == removable_units(g, config)]
        raise StructureError(
            f"cannot remove {target:.4f} of the {quantity}: at most {most.achieved:.4f} with max_layer_ratio="
            f"{config.max_layer_ratio} and min_channels={config.min_channels} (at their limit: "
            f"{', '.join(limited[:6])}{' …' if len(limited) > 6 else ''})"
        )
    _, allocation = bisect(
        lambda position: evaluate(candidates(position)),
        lambda candidate: candidate.achieved,
        target,
        (low, evaluate(candidates(low))),
        (high, most),
        steps=max(1, math.ceil(math.log2(high + 1)) + 1) if integer else 64,
        resolution=1e-9,
        integer=integer,
    )
    return allocation


def fixed_channels(groups: Sequence[GroupScores], fraction: float, config: AllocationConfig) -> Allocation:
    """The allocation removing ``fraction`` of all prunable channels (HAP's channel ratio r).

    Global and normalized: the ⌊r·N⌋ lowest-ranked channels (as many whole candidate units as fit);
    layerwise: each group loses ⌊r·C⌋ of its channels. Caps, minimums and rounding apply as everywhere.
    """
    groups = ranked(groups, config)
    total = sum(g.channels for g in groups)
    if config.scope == "layerwise":
        counts = layerwise_counts(groups, fraction, config)
    else:
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
    counts = rounded_counts(groups, counts, config)
    masks = kept_units(groups, counts)
    return Allocation(counts, masks, removed_channels(groups, masks) / total if total else 0.0)
