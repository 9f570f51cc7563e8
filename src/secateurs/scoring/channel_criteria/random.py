"""``random``: i.i.d. uniform channel scores from the run's generator (the floor to beat)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.scoring.channel_criteria.base import (
    ChannelContext,
    ChannelScores,
    NoCriterionOptions,
    register_channel_scorer,
)
from secateurs.structure.groups import ChannelGroup


@register_channel_scorer("random", description="uniform random channel scores (seeded)")
def random_scores(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[NoCriterionOptions]
) -> ChannelScores:
    generator = context.generator
    return ChannelScores([torch.rand(group.channels, generator=generator, dtype=torch.float64) for group in groups])
