"""Filter-norm helper shared by the ``l1`` and ``l2`` criteria: a row score of every member filter,
summed per group channel (ARCHITECTURE.md: a group's score is the sum of its members' scores)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from secateurs.structure.channel_view import channel_sums, layouts, member_slices
from secateurs.structure.groups import ChannelGroup

RowScore = Callable[[torch.Tensor], torch.Tensor]


def filter_scores(groups: Sequence[ChannelGroup], row_score: RowScore) -> list[torch.Tensor]:
    """``row_score`` of every member filter's weight rows, summed per group channel."""
    with torch.no_grad():
        weights = layouts(groups)
        return [
            channel_sums(group, ((m, row_score(rows)) for m, rows in member_slices(group, weights))) for group in groups
        ]
