"""Turn per-element scores into keep-masks: layer-wise, global or normalized-global, with ``min_keep``.

Pure functions: scores and masks in, masks out. Already-removed entries (``alive`` false) get score
``-inf`` so they are removed first and never come back; a target is always a fraction of each tensor's
*total* entries, so iterative protocols pass the cumulative target.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from secateurs.errors import UsageError
from secateurs.sparsity.fractions import check_sparsity
from secateurs.sparsity.granularity import Granularity, alive_units, top_units

SCOPES = ("layerwise", "global", "normalized")
NORMALIZATIONS = ("none", "l2", "mean")


def _masked_scores(scores: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
    scores = scores.detach().to(torch.float64)
    if alive is not None:
        scores = scores.masked_fill(~alive.bool(), float("-inf"))
    return scores


def select_layerwise(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float],
    granularity: Granularity,
    *,
    alive: Mapping[str, torch.Tensor] | None = None,
    min_keep: int = 1,
) -> dict[str, torch.Tensor]:
    """Keep the top ``1 - s_l`` units of every tensor ``l``; ``sparsity`` is one value or one per tensor."""
    masks = {}
    for name, score in scores.items():
        if isinstance(sparsity, Mapping):
            if name not in sparsity:
                raise UsageError(f"no sparsity given for {name!r}; given for: {', '.join(sparsity)}")
            target = check_sparsity(sparsity[name], f"sparsity of {name}")
        else:
            target = check_sparsity(sparsity)
        granularity.check(name, score.shape)
        masks[name] = granularity.select(_masked_scores(score, alive.get(name) if alive else None), target, min_keep)
    return masks


def normalize_scores(scores: torch.Tensor, how: str) -> torch.Tensor:
    """``none``: unchanged; ``l2``: divided by the L2 norm of the tensor's finite scores (LAP-global);
    ``mean``: divided by their mean. A statistic that is not positive leaves the scores unchanged."""
    if how == "none":
        return scores
    if how in ("l2", "mean"):
        finite = scores[torch.isfinite(scores)]
        if not finite.numel():
            return scores
        statistic = finite.norm() if how == "l2" else finite.mean()
        return scores / statistic if statistic > 0 else scores
    raise UsageError(f"unknown score normalisation {how!r}; accepted: {', '.join(NORMALIZATIONS)}")


def select_global(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    granularity: Granularity,
    *,
    alive: Mapping[str, torch.Tensor] | None = None,
    min_keep: int = 1,
    normalize: str = "none",
) -> dict[str, torch.Tensor]:
    """One ranking over the units of all tensors; keep the best until ``1 - s`` of all entries are kept.

    Units are taken in descending score order while the running count of entries stays within the
    budget ``round((1 - s) · total)`` (exact for element granularity); ties go to the tensor listed
    first, then to the lower flat index. Each tensor then keeps at least ``min_keep`` of its alive units,
    so the realised sparsity can be slightly lower than requested.
    """
    target = check_sparsity(sparsity)
    if not granularity.supports_global:
        raise UsageError(f"granularity {granularity.name!r} supports scope 'layerwise' only")
    names = list(scores)
    unit_scores, unit_sizes = [], []
    total = 0
    for name in names:
        granularity.check(name, scores[name].shape)
        masked = _masked_scores(scores[name], alive.get(name) if alive else None)
        units = normalize_scores(granularity.unit_scores(masked), normalize).reshape(-1)
        size = granularity.unit_size(scores[name].shape)
        unit_scores.append(units)
        unit_sizes.append(torch.full((units.numel(),), size, dtype=torch.int64))
        total += scores[name].numel()
    all_scores = torch.cat(unit_scores)
    all_sizes = torch.cat(unit_sizes)
    budget = round((1.0 - target) * total)
    order = torch.argsort(all_scores, descending=True, stable=True)
    kept_sizes = torch.cumsum(all_sizes[order], 0)
    chosen = order[kept_sizes <= budget]
    keep = torch.zeros(all_scores.numel(), dtype=torch.bool)
    keep[chosen] = True
    keep &= torch.isfinite(all_scores) | (all_scores > 0)
    masks = {}
    offset = 0
    for name, units in zip(names, unit_scores, strict=True):
        unit_keep = keep[offset : offset + units.numel()].clone()
        offset += units.numel()
        minimum = min(alive_units(units), max(min_keep, 0))
        if int(unit_keep.sum()) < minimum:
            unit_keep |= top_units(units, minimum).reshape(-1)
        shaped = unit_keep.view(granularity.unit_scores(scores[name]).shape)
        masks[name] = granularity.expand(shaped, scores[name].shape)
    return masks


def select(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float],
    granularity: Granularity,
    *,
    scope: str = "layerwise",
    alive: Mapping[str, torch.Tensor] | None = None,
    min_keep: int = 1,
    normalizer: str = "l2",
) -> dict[str, torch.Tensor]:
    """Keep-masks by ``scope``: ``layerwise``, ``global`` (raw scores) or ``normalized`` (each tensor's
    scores divided by its ``normalizer`` statistic, `normalize_scores`, then one global ranking)."""
    if scope == "layerwise":
        return select_layerwise(scores, sparsity, granularity, alive=alive, min_keep=min_keep)
    if scope in ("global", "normalized"):
        if isinstance(sparsity, Mapping):
            raise UsageError(f"scope {scope!r} takes one sparsity, not one per layer")
        normalize = normalizer if scope == "normalized" else "none"
        return select_global(scores, sparsity, granularity, alive=alive, min_keep=min_keep, normalize=normalize)
    raise UsageError(f"unknown scope {scope!r}; accepted: {', '.join(SCOPES)}")
