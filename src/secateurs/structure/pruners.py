"""Torch-Pruning pruners for the layer types it does not know, from their layer handlers.

Torch-Pruning removes channels from the layers it knows (convolutions, linear layers, norms, …) and
calls a *customized pruner* for any other type it finds in a model. For every non-native layer
handler (`LayerHandler.native` false: neural implants, a user's own layer) `custom_pruners` gives it
one that delegates to the handler's `remove_channels`. A norm-like handler (``kind = "norm"``) couples
input and output channel c (Torch-Pruning's rule: the same function prunes both). Torch-Pruning
matches customized pruners by exact class, so each class present in the model gets its own entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch_pruning as tp
from torch import nn

from secateurs.layers import LayerHandler, handler_for


class HandlerPruner(tp.pruner.function.BasePruningFunc):
    """A Torch-Pruning pruner that removes channels through a layer handler."""

    def __init__(self, handler: LayerHandler[Any], module_type: type[nn.Module]) -> None:
        super().__init__()
        self.handler = handler
        self.TARGET_MODULES = (module_type,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        self.handler.remove_channels(layer, sorted(int(i) for i in idxs), "out")
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        self.handler.remove_channels(layer, sorted(int(i) for i in idxs), "in")
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.handler.channels(layer, "out")

    def get_in_channels(self, layer: nn.Module) -> int:
        return self.handler.channels(layer, "in")


class CoupledHandlerPruner(HandlerPruner):
    """`HandlerPruner` for per-channel layers: input channel c is output channel c."""

    prune_in_channels = HandlerPruner.prune_out_channels
    """Torch-Pruning couples a layer's input and output channels when one function prunes both."""


def custom_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.function.BasePruningFunc]:
    """A pruner for every non-native layer class in ``model`` (what ``customized_pruners=`` takes)."""
    pruners: dict[type[nn.Module], tp.pruner.function.BasePruningFunc] = {}
    for module in model.modules():
        handler = handler_for(module)
        kind = type(module)
        if handler is None or handler.native or kind in pruners:
            continue
        pruner = CoupledHandlerPruner if handler.kind == "norm" else HandlerPruner
        pruners[kind] = pruner(handler, kind)
    return pruners


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Every layer's `LayerHandler.tracing` set-up, for the duration of one Torch-Pruning trace."""
    with contextlib.ExitStack() as stack:
        for module in model.modules():
            handler = handler_for(module)
            if handler is not None:
                stack.enter_context(handler.tracing(module))
        yield
