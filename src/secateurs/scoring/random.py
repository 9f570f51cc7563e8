"""Random scores: the floor every method must beat."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.scoring.base import ScoreContext, register_scorer, weight


@register_scorer("random", description="uniform random scores from the run's seeded generator")
def random_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """Score of each entry: an independent U(0, 1) draw from ``context.generator`` (in ``names`` order)."""
    return {name: torch.rand(weight(model, name).shape, generator=context.generator) for name in names}
