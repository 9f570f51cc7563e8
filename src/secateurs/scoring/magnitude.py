"""Magnitude scores: |w| (Han et al. 2015; the baseline of every pruning paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.scoring.base import ScoreContext, register_scorer, weight


@register_scorer("magnitude", description="|w|, the absolute value of each weight")
def magnitude_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """Score of entry w: ``|w|``. Returns new tensors; the model is untouched."""
    with torch.no_grad():
        return {name: weight(model, name).detach().abs().clone() for name in names}
