"""LAMP scores (Lee, Park, Mo, Ahn, Shin, "Layer-adaptive sparsity for the magnitude-based pruning",
ICLR 2021, arXiv 2010.07611).

Within one layer, sort the weights by magnitude in ascending order, u = 1 … n. The LAMP score of
the u-th weight is

    score(u) = w_u² / Σ_{v ≥ u} w_v²,

its squared magnitude divided by the sum of the squares of itself and every larger weight. The
largest weight of every layer scores 1, so a global threshold on LAMP scores never empties a layer,
and the scores are comparable across layers without further normalisation. Ties (equal |w|) are
ordered by position (a stable sort), so equal weights get different scores, as in the paper's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.scoring.base import ScoreContext, register_scorer, weight


def lamp_layer_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every entry of one weight tensor (same shape, float64)."""
    squares = weight.detach().to(torch.float64).reshape(-1).pow(2)
    order = torch.argsort(squares, stable=True)
    ascending = squares[order]
    suffix_sums = ascending.flip(0).cumsum(0).flip(0)
    ranked = torch.where(suffix_sums > 0, ascending / suffix_sums.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    scores = torch.empty_like(squares)
    scores[order] = ranked
    return scores.reshape(weight.shape)


@register_scorer("lamp", description="LAMP: w_u² / Σ_{v ≥ u} w_v² within each layer (Lee et al. 2021)")
def lamp_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """LAMP scores of the weights ``names`` (module docstring); the model is untouched."""
    return {name: lamp_layer_scores(weight(model, name)) for name in names}
