"""``nn.Conv2d``: plain, grouped and depthwise convolutions.

Output channel c is filter ``weight[c]``; input channel c of a plain convolution is ``weight[:, c]``.
A grouped convolution (``groups`` g, not depthwise) reads input channel c in group ``c // (C_in/g)``
at position ``c % (C_in/g)``; channels at the same position in every group are tied (removed
together, `ties`), so the group count survives pruning. A depthwise convolution (g = C_in = C_out,
Torch-Pruning's rule) couples input and output channel c: its row is ``weight[c]`` either way.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.layers.base import ChannelChange, LayerHandler, LayerSize, Role, register_layer_handler


def depthwise(conv: nn.Conv2d) -> bool:
    """Torch-Pruning's depthwise rule: one group per output channel (the in/out channels are coupled)."""
    return conv.groups == conv.out_channels and conv.groups == conv.in_channels and conv.groups > 1


@register_layer_handler(nn.Conv2d)
class Conv2dHandler(LayerHandler[nn.Conv2d]):
    def channels(self, module: nn.Conv2d, role: Role) -> int:
        return module.out_channels if role == "out" else module.in_channels

    def rows(self, module: nn.Conv2d, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        count = len(indices)
        if role == "out" or depthwise(module):
            return tensor.index_select(0, indices).reshape(count, -1)
        if module.groups == 1:
            return tensor.index_select(1, indices).transpose(0, 1).reshape(count, -1)
        per_in = module.in_channels // module.groups
        per_out = module.out_channels // module.groups
        grouped = tensor.reshape(module.groups, per_out, per_in, -1)
        return grouped[indices // per_in, :, indices % per_in].reshape(count, -1)

    def ties(self, module: nn.Conv2d, role: Role) -> int:
        if module.groups == 1 or depthwise(module):
            return 0
        return module.groups

    def size(self, module: nn.Conv2d, change: ChannelChange) -> LayerSize:
        """k·k·(C_in/g) per kept filter (k·k for depthwise), C_in per implanted one, plus biases."""
        kept_out = int(change.out_kept.sum())
        area = module.kernel_size[0] * module.kernel_size[1]
        if depthwise(module):
            weight = kept_out * area
        else:
            kept_in = change.in_kept
            weight = (kept_out - change.implanted) * (kept_in // module.groups) * area + change.implanted * kept_in
        bias = kept_out if module.bias is not None else 0
        return LayerSize(weight + bias, weight)
