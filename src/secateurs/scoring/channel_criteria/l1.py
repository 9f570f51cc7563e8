"""``l1``: S_c = Σ|w| over the filter (Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for
Efficient ConvNets", ICLR 2017, https://arxiv.org/abs/1608.08710), summed over a group's filters."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from secateurs.scoring.channel_criteria._norms import filter_scores
from secateurs.scoring.channel_criteria.base import (
    ChannelContext,
    ChannelScores,
    NoCriterionOptions,
    register_channel_scorer,
)
from secateurs.structure.groups import ChannelGroup


@register_channel_scorer("l1", description="L1 norm of the filter, Σ|w| (Li et al. 2017)")
def l1_scores(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[NoCriterionOptions]
) -> ChannelScores:
    return ChannelScores(filter_scores(groups, lambda rows: rows.abs().sum(1)))
