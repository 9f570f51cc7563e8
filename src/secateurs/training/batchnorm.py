"""BatchNorm re-calibration: re-estimate running statistics after pruning changed the activations."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class _PooledMoments:
    """Per-channel count, mean and sum of squared deviations over batches (Chan et al.'s pairwise update).

    Float64 throughout, so the pooled mean and variance equal those of the concatenated batches up to
    rounding, whatever the batch sizes.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, inputs: torch.Tensor) -> None:
        values = inputs.detach().to(torch.float64).transpose(0, 1).reshape(inputs.shape[1], -1)
        count = values.shape[1]
        if count == 0:
            return
        mean = values.mean(dim=1)
        squares = ((values - mean.unsqueeze(1)) ** 2).sum(dim=1)
        if self.mean is None or self.squares is None:
            self.count, self.mean, self.squares = count, mean, squares
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.squares = self.squares + squares + delta**2 * (self.count * count / total)
        self.count = total


@torch.no_grad()
def recalibrate_batchnorm_(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Reset every BatchNorm's running statistics and set them to the exact mean and unbiased variance
    of its inputs over all ``batches`` (pooled over examples, as if the batches were concatenated).

    The model runs in train mode (each BN normalises with its batch's statistics, as in training), then
    each BN's momentum and the model's mode are restored. Mutates the BN buffers (``num_batches_tracked``
    counts the batches). Returns the number of BN layers.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    moments = {id(norm): _PooledMoments() for norm in norms}
    hooks = [
        norm.register_forward_pre_hook(lambda module, inputs: moments[id(module)].add(inputs[0]))
        for norm in norms
        if norm.track_running_stats
    ]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    for norm in norms:
        pooled = moments[id(norm)]
        if norm.running_mean is None or norm.running_var is None or pooled.mean is None or pooled.squares is None:
            continue
        norm.running_mean.copy_(pooled.mean)
        if pooled.count > 1:
            norm.running_var.copy_(pooled.squares / (pooled.count - 1))
    return len(norms)
