"""Parameters and MACs of a model after a channel removal, without pruning it.

The allocator searches the channel ratio that lands on a parameter or MAC target; each probe of
that search needs the size of a candidate pruned model. `SizeModel` computes it exactly from the
channel groups: for every member layer it counts how many of its output and input channels survive
and multiplies out its weight shapes (a grouped convolution keeps its group count, a depthwise one
loses a group per channel, an implanted output channel costs C_in instead of C_in·k²). Layers outside
every group keep their size. MACs follow `metrics.counts.count_macs` (Conv2d/Linear weights × output
positions of one example). Tests check the prediction against the physically pruned model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from secateurs.metrics.counts import count_macs, count_params
from secateurs.structure.groups import ChannelGraph, Member
from secateurs.structure.implant import ImplantedConv2d


@dataclass
class _Layer:
    module: nn.Module
    positions: int = 0
    outs: list[tuple[str, Member]] = field(default_factory=list)
    ins: list[tuple[str, Member]] = field(default_factory=list)


@dataclass(frozen=True)
class Size:
    params: int
    macs: int


class SizeModel:
    """Exact parameter and MAC counts of ``graph.model`` after removing/implanting channels."""

    def __init__(self, graph: ChannelGraph, input_shape: tuple[int, ...]) -> None:
        model = graph.model
        self.layers: dict[str, _Layer] = {}
        for group in graph.groups:
            for member in group.members:
                layer = self.layers.setdefault(member.name, _Layer(member.module))
                (layer.outs if member.role == "out" else layer.ins).append((group.root, member))
        self._measure_positions(model, input_shape)
        self.original = Size(count_params(model), count_macs(model, input_shape))
        managed = self._managed({}, {})
        self.fixed = Size(self.original.params - managed.params, self.original.macs - managed.macs)

    def _measure_positions(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        handles = []
        for layer in self.layers.values():
            if isinstance(layer.module, (nn.Conv2d, nn.Linear, ImplantedConv2d)):

                def hook(module: nn.Module, inputs: object, output: torch.Tensor, layer: _Layer = layer) -> None:
                    channels = output.shape[-1] if isinstance(module, nn.Linear) else output.shape[1]
                    layer.positions = output.numel() // channels

                handles.append(layer.module.register_forward_hook(hook))
        flags = {module: module.training for module in model.modules()}
        try:
            model.eval()
            parameter = next(model.parameters(), None)
            dtype = parameter.dtype if parameter is not None else torch.float32
            with torch.no_grad():
                model(torch.zeros((1, *input_shape), dtype=dtype))
        finally:
            for handle in handles:
                handle.remove()
            for module, training in flags.items():
                module.training = training

    def size(self, removed: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> Size:
        """Parameters and MACs of the whole model after the change.

        ``removed[root]`` / ``implanted[root]`` are boolean masks over each group's channels; absent
        groups are unchanged.
        """
        managed = self._managed(removed, implanted)
        return Size(self.fixed.params + managed.params, self.fixed.macs + managed.macs)

    def _managed(self, removed: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> Size:
        params = macs = 0
        for layer in self.layers.values():
            out_gone, out_implanted = self._out_counts(layer, removed, implanted)
            in_gone = sum(int(removed[root][m.channels].sum()) for root, m in layer.ins if root in removed)
            layer_params, weight = _layer_size(layer.module, out_gone, out_implanted, in_gone)
            params += layer_params
            macs += weight * layer.positions
        return Size(params, macs)

    @staticmethod
    def _out_counts(
        layer: _Layer, removed: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        """(boolean mask of removed output slots, number of newly implanted output slots)."""
        size = _out_size(layer.module)
        gone = torch.zeros(size, dtype=torch.bool)
        new_implants = 0
        for root, member in layer.outs:
            if root in removed:
                gone[member.indices[removed[root][member.channels]]] = True
            if root in implanted and type(layer.module) is nn.Conv2d:
                new_implants += int(implanted[root][member.channels].sum())
        return gone, new_implants


def _out_size(module: nn.Module) -> int:
    if isinstance(module, (nn.Conv2d, ImplantedConv2d)):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    raise TypeError(f"no size rule for {type(module).__name__}")


def _layer_size(module: nn.Module, out_gone: torch.Tensor, new_implants: int, in_gone: int) -> tuple[int, int]:
    """(parameters, weight entries that cost MACs) of ``module`` after the change."""
    kept_out = int(out_gone.numel() - out_gone.sum())
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return (2 * kept_out if module.affine else 0), 0
    bias = kept_out if getattr(module, "bias", None) is not None else 0
    if isinstance(module, nn.Linear):
        weight = kept_out * (module.in_features - in_gone)
        return weight + bias, weight
    if isinstance(module, ImplantedConv2d):
        kept_in = module.in_channels - in_gone
        area = module.kept.kernel_size[0] * module.kept.kernel_size[1]
        implant_slots = torch.zeros(module.out_channels, dtype=torch.bool)
        implant_slots[module.implanted_slots()] = True
        implants = int((implant_slots & ~out_gone).sum())
        weight = ((kept_out - implants) * area + implants) * kept_in
        biases = kept_out if module.kept.bias is not None else 0
        return weight + biases, weight
    assert isinstance(module, nn.Conv2d)
    area = module.kernel_size[0] * module.kernel_size[1]
    if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
        weight = kept_out * area
    else:
        kept_in = module.in_channels - in_gone
        weight = (kept_out - new_implants) * (kept_in // module.groups) * area + new_implants * kept_in
    return weight + bias, weight
