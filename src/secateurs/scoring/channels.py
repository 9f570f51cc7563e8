"""Channel scores for structured pruning: one score per channel of every channel group.

Every score here is computed per *member filter* (each layer whose output channels are the group's
channels) from its ``(units, -1)`` slice (`structure.groups.member_slices`) and summed over the
group's filters (ARCHITECTURE.md: a group's score is the sum of its members' scores).

* ``l1-filter`` (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv 1608.08710):
  S_c = Σ|w| over the filter.
* ``l2-filter``: S_c = ‖w‖₂ of the filter (the norm, not its square, so the group sum adds norms).
* ``taylor`` (Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019,
  arXiv 1906.10771, first-order "FO" criterion on the filter weights): per calibration batch b,
  z_c = Σ_{w∈c} g_w·w with g the gradient of the batch's mean loss; S_c = mean_b z_c². Deviation:
  computed once on the calibration batches with the model in eval mode (the paper accumulates it
  during training, which would also update batch-norm statistics); per filter, then summed.
* ``random-channel``: i.i.d. uniform scores from the run's generator (the floor to beat).

All functions leave the model unchanged (tests check it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from secateurs.scoring.base import LossFn
from secateurs.scoring.hessian import prepared_copy
from secateurs.structure.groups import ChannelGroup, channel_sums, layouts, member_slices
from secateurs.structure.implant import ImplantedConv2d

RowScore = Callable[[torch.Tensor], torch.Tensor]


def filter_scores(groups: Sequence[ChannelGroup], row_score: RowScore) -> list[torch.Tensor]:
    """``row_score`` of every member filter's weight rows, summed per group channel."""
    with torch.no_grad():
        weights = layouts(groups)
        return [
            channel_sums(group, ((m, row_score(rows)) for m, rows in member_slices(group, weights))) for group in groups
        ]


def l1_filter_scores(groups: Sequence[ChannelGroup]) -> list[torch.Tensor]:
    return filter_scores(groups, lambda rows: rows.abs().sum(1))


def l2_filter_scores(groups: Sequence[ChannelGroup]) -> list[torch.Tensor]:
    return filter_scores(groups, lambda rows: rows.pow(2).sum(1).sqrt())


def random_channel_scores(groups: Sequence[ChannelGroup], generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.rand(group.channels, generator=generator, dtype=torch.float64) for group in groups]


def taylor_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
) -> list[torch.Tensor]:
    """Molchanov's first-order Taylor scores (see the module docstring), summed per group channel."""
    work = prepared_copy(model)
    names = sorted({m.name for g in groups for m in g.out_filters()})
    modules = {name: work.get_submodule(name) for name in names}
    leaves = {name: _leaf_weights(module) for name, module in modules.items()}
    flat = [w for weights in leaves.values() for w in weights]
    squares = [torch.zeros(group.channels, dtype=torch.float64) for group in groups]
    with torch.enable_grad():
        for inputs, targets in batches:
            loss = loss_fn(work(inputs.contiguous()), targets)
            gradients = iter(torch.autograd.grad(loss, flat))
            products: dict[str, torch.Tensor] = {}
            for name, weights in leaves.items():
                pieces = [w.detach() * next(gradients) for w in weights]
                products[name] = _compose(modules[name], pieces)
            for index, group in enumerate(groups):
                squares[index] += channel_sums(
                    group, ((m, rows.sum(1).pow(2)) for m, rows in member_slices(group, products))
                )
    return [s / max(len(batches), 1) for s in squares]


def _leaf_weights(module: nn.Module) -> list[torch.Tensor]:
    if isinstance(module, ImplantedConv2d):
        return [module.kept.weight, module.implant.weight]
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return [weight]


def _compose(module: nn.Module, pieces: list[torch.Tensor]) -> torch.Tensor:
    """Leaf tensors in the member layout (`ImplantedConv2d` → its dense equivalent kernel)."""
    if isinstance(module, ImplantedConv2d):
        return module.compose(pieces[0], pieces[1])
    return pieces[0]
