"""``l2``: S_c = ‖w‖₂ of the filter (the norm, not its square, so a group adds norms), the L2
variant of Li et al., ICLR 2017 (https://arxiv.org/abs/1608.08710)."""

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


@register_channel_scorer("l2", description="L2 norm of the filter, ‖w‖₂")
def l2_scores(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[NoCriterionOptions]
) -> ChannelScores:
    return ChannelScores(filter_scores(groups, lambda rows: rows.pow(2).sum(1).sqrt()))
