"""``taylor``: Molchanov, Mallya, Tyree, Frosio, Kautz, "Importance Estimation for Neural Network
Pruning", CVPR 2019, https://arxiv.org/abs/1906.10771, first-order ("FO") criterion on the filter
weights.

Per calibration batch b, z_c = Σ_{w∈c} g_w·w with g the gradient of the batch's mean loss;
S_c = mean_b z_c², per filter, summed over a group's filters. Deviation: computed once on the
calibration batches with the model in eval mode (the paper accumulates it during training, which
would also update batch-norm statistics). Gradients are taken on a copy; the model is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.layers import leaf_weights
from secateurs.scoring.channel_criteria.base import (
    ChannelContext,
    ChannelScores,
    NoCriterionOptions,
    register_channel_scorer,
)
from secateurs.scoring.hessian import prepared_copy
from secateurs.structure.channel_view import channel_sums, composed, member_slices
from secateurs.structure.groups import ChannelGroup


@register_channel_scorer(
    "taylor", description="first-order Taylor importance (Σ g·w)² over the filter (Molchanov 2019)", needs_data=True
)
def taylor_scores(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[NoCriterionOptions]
) -> ChannelScores:
    batches = context.require_batches("taylor")
    work = prepared_copy(model)
    names = sorted({m.name for g in groups for m in g.out_filters()})
    modules = {name: work.get_submodule(name) for name in names}
    leaves = {name: leaf_weights(module) for name, module in modules.items()}
    flat = [w for weights in leaves.values() for w in weights]
    squares = [torch.zeros(group.channels, dtype=torch.float64) for group in groups]
    with torch.enable_grad():
        for inputs, targets in batches:
            loss = context.loss_fn(work(inputs.contiguous()), targets)
            gradients = iter(torch.autograd.grad(loss, flat))
            products: dict[str, torch.Tensor] = {}
            for name, weights in leaves.items():
                products[name] = composed(modules[name], [w.detach() * next(gradients) for w in weights])
            for index, group in enumerate(groups):
                squares[index] += channel_sums(
                    group, ((m, rows.sum(1).pow(2)) for m, rows in member_slices(group, products))
                )
    return ChannelScores([s / max(len(batches), 1) for s in squares], {"batches": len(batches)})
