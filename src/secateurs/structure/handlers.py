"""Layer handlers: how to read one channel's slice of a layer's parameter-shaped tensor.

Every per-layer-type decision of channel pruning lives here, once. A handler knows, for its module
types, which tensor holds the layer's channels (`LayerHandler.layout`) and how to cut the rows of a
tensor in that layout for output channels (``out``) or input channels (``in``) as a ``(units, -1)``
matrix. Scorers, masks and size models read channels only through `structure.groups.member_slices`,
which dispatches here; a layer type without a handler is a `StructureError` naming the layer.

Handlers: ``nn.Conv2d`` (plain, grouped and depthwise), ``nn.Linear``, batch norm, and
`ImplantedConv2d` (read through its equivalent dense kernel).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
from torch import nn

from secateurs.structure.implant import ImplantedConv2d

Role = Literal["out", "in"]
Kind = Literal["filter", "norm"]


class LayerHandler(ABC):
    """Channel slicing for one family of layers."""

    types: ClassVar[tuple[type[nn.Module], ...]]
    kind: ClassVar[Kind]

    @abstractmethod
    def layout(self, module: nn.Module) -> torch.Tensor:
        """The layer's weight in the layout `rows` reads (the effective weight for composite layers)."""

    @abstractmethod
    def rows(self, module: nn.Module, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        """The slices of ``tensor`` (shaped like `layout`) for channels ``indices``, as ``(len, -1)``."""

    def ties(self, module: nn.Module, role: Role) -> int:
        """Channels per position that must be removed together (grouped convolutions); 0: no ties."""
        return 0


class ConvHandler(LayerHandler):
    types = (nn.Conv2d,)
    kind = "filter"

    def layout(self, module: nn.Module) -> torch.Tensor:
        assert isinstance(module, nn.Conv2d)
        return module.weight

    def rows(self, module: nn.Module, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        assert isinstance(module, nn.Conv2d)
        count = len(indices)
        if role == "out" or _depthwise(module):
            return tensor.index_select(0, indices).reshape(count, -1)
        if module.groups == 1:
            return tensor.index_select(1, indices).transpose(0, 1).reshape(count, -1)
        per_in = module.in_channels // module.groups
        per_out = module.out_channels // module.groups
        grouped = tensor.reshape(module.groups, per_out, per_in, -1)
        return grouped[indices // per_in, :, indices % per_in].reshape(count, -1)

    def ties(self, module: nn.Module, role: Role) -> int:
        assert isinstance(module, nn.Conv2d)
        if module.groups == 1 or _depthwise(module):
            return 0
        return module.groups


class LinearHandler(LayerHandler):
    types = (nn.Linear,)
    kind = "filter"

    def layout(self, module: nn.Module) -> torch.Tensor:
        assert isinstance(module, nn.Linear)
        return module.weight

    def rows(self, module: nn.Module, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        if role == "out":
            return tensor.index_select(0, indices).reshape(len(indices), -1)
        return tensor.index_select(1, indices).transpose(0, 1).reshape(len(indices), -1)


class BatchNormHandler(LayerHandler):
    types = (nn.modules.batchnorm._BatchNorm,)
    kind = "norm"

    def layout(self, module: nn.Module) -> torch.Tensor:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        if module.weight is not None:
            return module.weight
        return torch.ones(module.num_features)

    def rows(self, module: nn.Module, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        return tensor.index_select(0, indices).reshape(len(indices), -1)


class ImplantHandler(LayerHandler):
    types = (ImplantedConv2d,)
    kind = "filter"

    def layout(self, module: nn.Module) -> torch.Tensor:
        assert isinstance(module, ImplantedConv2d)
        return module.effective_weight()

    def rows(self, module: nn.Module, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        if role == "out":
            return tensor.index_select(0, indices).reshape(len(indices), -1)
        return tensor.index_select(1, indices).transpose(0, 1).reshape(len(indices), -1)


def _depthwise(conv: nn.Conv2d) -> bool:
    """Torch-Pruning's depthwise rule: one group per output channel (the in/out channels are coupled)."""
    return conv.groups == conv.out_channels and conv.groups == conv.in_channels and conv.groups > 1


HANDLERS: tuple[LayerHandler, ...] = (ImplantHandler(), ConvHandler(), LinearHandler(), BatchNormHandler())
ACCEPTED = "Conv2d, Linear, BatchNorm1d/2d/3d, ImplantedConv2d"


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The handler of ``module``'s type, or None when there is none."""
    for handler in HANDLERS:
        if isinstance(module, handler.types):
            return handler
    return None
