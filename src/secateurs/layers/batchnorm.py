"""Batch norm (1d/2d/3d, sync): one scale γ_c and shift β_c per channel, no MACs.

Its rows are γ (ones when the layer is not affine); removing a channel removes γ_c and β_c and the
running statistics (Torch-Pruning does it).
"""

from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from secateurs.layers.base import ChannelChange, LayerHandler, LayerSize, Role, register_layer_handler


@register_layer_handler(_BatchNorm)
class BatchNormHandler(LayerHandler[_BatchNorm]):
    kind = "norm"
    label = "BatchNorm1d/2d/3d"

    def channels(self, module: _BatchNorm, role: Role) -> int:
        return module.num_features

    def weight(self, module: _BatchNorm) -> torch.Tensor:
        if isinstance(module.weight, torch.Tensor):
            return module.weight
        return torch.ones(module.num_features)

    def rows(self, module: _BatchNorm, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        return tensor.index_select(0, indices).reshape(len(indices), -1)

    def size(self, module: _BatchNorm, change: ChannelChange) -> LayerSize:
        kept = int(change.out_kept.sum())
        return LayerSize(2 * kept if module.affine else 0, 0)
