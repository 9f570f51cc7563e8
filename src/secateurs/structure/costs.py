"""Parameters and MACs of a model after a channel removal, without pruning it.

The allocator searches the channel count that lands on a parameter or MAC target; each probe of that
search needs the size of a candidate pruned model. `SizeModel` computes it exactly from the channel
groups: for every member layer it counts which of its output channels and how many of its input
channels survive and asks the layer's handler for its size (`secateurs.layers.LayerHandler.size`:
a grouped convolution keeps its group count, a depthwise one loses a group per channel, an implanted
output channel costs C_in instead of C_in·k²). Layers outside every group keep their size. MACs are
the handler's MAC-costing weight entries × the layer's output positions for one example, as
`metrics.counts.count_macs` counts them. Tests check the prediction against the physically pruned
model for every zoo model and every registered handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from secateurs.layers import ChannelChange
from secateurs.metrics.counts import count_macs, count_params
from secateurs.structure.groups import ChannelGraph, Member


@dataclass
class _Layer:
    member: Member
    positions: int = 0
    outs: list[tuple[str, Member]] = field(default_factory=list)
    ins: list[tuple[str, Member]] = field(default_factory=list)

    @property
    def module(self) -> nn.Module:
        return self.member.module


@dataclass(frozen=True)
class Size:
    params: int
    macs: int


class SizeModel:
    """Exact parameter and MAC counts of ``graph.model`` after removing/implanting channels.

    All masks are per group channel: ``kept[root]`` True = the channel stays, ``implanted[root]``
    True = a kept channel whose filters become 1×1 implants. Absent groups are unchanged.
    """

    def __init__(self, graph: ChannelGraph, input_shape: tuple[int, ...]) -> None:
        model = graph.model
        self.layers: dict[str, _Layer] = {}
        for group in graph.groups:
            for member in group.members:
                layer = self.layers.setdefault(member.name, _Layer(member))
                (layer.outs if member.role == "out" else layer.ins).append((group.root, member))
        self._measure_positions(model, input_shape)
        self.original = Size(count_params(model), count_macs(model, input_shape))
        managed = self._managed({}, {})
        self.fixed = Size(self.original.params - managed.params, self.original.macs - managed.macs)

    def _measure_positions(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        handles = []
        for layer in self.layers.values():
            if layer.member.kind != "filter":
                continue

            def hook(module: nn.Module, inputs: object, output: torch.Tensor, layer: _Layer = layer) -> None:
                layer.positions = output.numel() // layer.member.handler.channels(module, "out")

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

    def size(self, kept: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> Size:
        """Parameters and MACs of the whole model after the change (see the class docstring)."""
        managed = self._managed(kept, implanted)
        return Size(self.fixed.params + managed.params, self.fixed.macs + managed.macs)

    def removed_fraction(
        self,
        kept: Mapping[str, torch.Tensor],
        implanted: Mapping[str, torch.Tensor] | None = None,
        *,
        quantity: Literal["params", "macs"] | str,
    ) -> float:
        """1 − (parameters, or MACs when ``quantity`` is ``macs``, after the change) / before."""
        size = self.size(kept, implanted or {})
        if quantity == "macs":
            return 1.0 - size.macs / self.original.macs
        return 1.0 - size.params / self.original.params

    def layer_sizes(self, kept: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> dict[str, Size]:
        """Parameters and MACs of every layer in a group after the change, by layer name."""
        return {name: self._layer_size(layer, kept, implanted) for name, layer in self.layers.items()}

    def _managed(self, kept: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> Size:
        sizes = self.layer_sizes(kept, implanted).values()
        return Size(sum(size.params for size in sizes), sum(size.macs for size in sizes))

    @staticmethod
    def _layer_size(layer: _Layer, kept: Mapping[str, torch.Tensor], implanted: Mapping[str, torch.Tensor]) -> Size:
        handler, module = layer.member.handler, layer.module
        out_kept = torch.ones(handler.channels(module, "out"), dtype=torch.bool)
        new_implants = 0
        for root, member in layer.outs:
            if root in kept:
                out_kept[member.indices[~kept[root][member.channels]]] = False
            if root in implanted:
                new_implants += int(implanted[root][member.channels].sum())
        in_gone = sum(int((~kept[root][m.channels]).sum()) for root, m in layer.ins if root in kept)
        size = handler.size(module, ChannelChange(out_kept, handler.channels(module, "in") - in_gone, new_implants))
        return Size(size.params, size.mac_weights * layer.positions)
