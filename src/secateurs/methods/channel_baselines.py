"""The channel-pruning baselines every structured-pruning paper compares against.

* ``l1-filter`` — Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets",
  ICLR 2017, https://arxiv.org/abs/1608.08710. Removes the filters of smallest L1 norm, with the same
  fraction per layer (the paper's per-layer sensitivity analysis is replaced by the allocator's
  target search: deviation).
* ``l2-filter`` — the same with the L2 norm of each filter.
* ``taylor`` — Molchanov, Mallya, Tyree, Frosio, Kautz, "Importance Estimation for Neural Network
  Pruning", CVPR 2019, https://arxiv.org/abs/1906.10771. First-order Taylor importance (g·w summed
  over a filter, squared, averaged over calibration batches), ranked globally as in the paper.
  Deviation: one-shot on the calibration batches in eval mode instead of accumulated during training
  and pruned iteratively.
* ``random-channel`` — uniform random channel scores from the run's seed (``random`` is the
  unstructured baseline).

All run through `ChannelPruning`: coupled groups score the sum of their filters' scores, channels are
removed physically, and ``--target params|macs|channels`` sets what ``sparsity`` measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from secateurs.methods.base import PruneContext, register_method
from secateurs.methods.structured import ChannelPruning
from secateurs.scoring.base import ScoreContext
from secateurs.scoring.channels import l1_filter_scores, l2_filter_scores, random_channel_scores, taylor_scores
from secateurs.structure.groups import ChannelGroup


class L1Filter(ChannelPruning):
    name = "l1-filter"
    description = "remove the filters (channels) of smallest L1 norm, same fraction per layer"
    paper = "arXiv 1608.08710"
    default_scope = "layerwise"

    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        return l1_filter_scores(groups), {}


class L2Filter(ChannelPruning):
    name = "l2-filter"
    description = "remove the filters (channels) of smallest L2 norm, same fraction per layer"
    paper = "arXiv 1608.08710 (L2 variant)"
    default_scope = "layerwise"

    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        return l2_filter_scores(groups), {}


class Taylor(ChannelPruning):
    name = "taylor"
    description = "first-order Taylor channel importance (Molchanov 2019), global ranking"
    paper = "arXiv 1906.10771"
    needs_data = True

    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        batches = ScoreContext(context.generator, batches=context.batches).require_batches(self.name)
        return taylor_scores(model, groups, batches, context.loss_fn), {"batches": len(batches)}


class RandomChannel(ChannelPruning):
    name = "random-channel"
    description = "remove uniformly random channels (seeded), same fraction per layer"
    default_scope = "layerwise"

    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        return random_channel_scores(groups, context.generator), {}


register_method(L1Filter())
register_method(L2Filter())
register_method(Taylor())
register_method(RandomChannel())
