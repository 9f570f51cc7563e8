"""BatchNorm re-calibration: re-estimate running statistics after pruning changed the activations."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm_(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Reset every BatchNorm's running mean/var and re-estimate them as exact averages over ``batches``.

    Runs the model in train mode with ``momentum=None`` (cumulative average), then restores each
    BN's momentum and the model's mode. Mutates the BN buffers. Returns the number of BN layers.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
