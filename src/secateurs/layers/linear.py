"""``nn.Linear``: output channel c is row ``weight[c]``, input feature f is column ``weight[:, f]``.

After a flatten, one input channel of the group is several features (Torch-Pruning maps them).
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.layers.base import ChannelChange, LayerHandler, LayerSize, Role, register_layer_handler


@register_layer_handler(nn.Linear)
class LinearHandler(LayerHandler[nn.Linear]):
    def channels(self, module: nn.Linear, role: Role) -> int:
        return module.out_features if role == "out" else module.in_features

    def rows(self, module: nn.Linear, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        if role == "out":
            return tensor.index_select(0, indices).reshape(len(indices), -1)
        return tensor.index_select(1, indices).transpose(0, 1).reshape(len(indices), -1)

    def size(self, module: nn.Linear, change: ChannelChange) -> LayerSize:
        kept_out = int(change.out_kept.sum())
        weight = kept_out * change.in_kept
        bias = kept_out if module.bias is not None else 0
        return LayerSize(weight + bias, weight)
