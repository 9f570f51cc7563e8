"""The layer-handler contract: everything channel pruning needs to know about one module type.

A `LayerHandler` covers, for its module type (and, through the MRO lookup of `handler_for`, its
subclasses):

* **channel slicing**: how many channels the layer has as a producer (role ``out``) and as a
  consumer (role ``in``, `LayerHandler.channels`), its weight in the layout slices are cut from
  (`LayerHandler.layout`), the rows of a tensor in that layout for given channels as a
  ``(len(indices), -1)`` matrix (`LayerHandler.rows`), and which channels a grouped convolution ties
  together (`LayerHandler.ties`);
* **composition**: a *composite* layer (a neural implant: k×k filters and 1×1 implants) keeps its
  weights in leaf layers that have handlers of their own. `LayerHandler.leaves` names them;
  `LayerHandler.compose` puts tensors shaped like the leaves' weights into the layer's layout and
  `LayerHandler.compose_out` puts per-leaf output-channel values into the layer's channel order.
  Scorers, masks and the Hessian read composite layers through these and nothing else;
* **size**: parameters and the weight entries that cost one MAC per output position after a
  `ChannelChange` (output channels removed or turned into 1×1 implants, input channels removed),
  used by the size model of the allocator (`LayerHandler.size`), and the MACs of one call that
  `metrics.counts.count_macs` adds up (`LayerHandler.macs`);
* **surgery**, for module types Torch-Pruning does not know (``native = False``): removing channels in
  place (`LayerHandler.remove_channels`), which secateurs hands to Torch-Pruning as a customized
  pruner, and any set-up its tracer needs (`LayerHandler.tracing`).

Adding a layer type is one small class in your own code::

    @register_layer_handler(MyConv)
    class MyConvHandler(LayerHandler[MyConv]):
        native = False                      # Torch-Pruning does not know MyConv
        def channels(self, module, role): ...
        def rows(self, module, tensor, indices, role): ...
        def size(self, module, change): ...
        def remove_channels(self, module, indices, role): ...

Built in: ``nn.Conv2d`` (plain, grouped, depthwise), ``nn.Linear`` and batch norm (`layers.conv`,
`layers.linear`, `layers.batchnorm`); `ImplantedConv2d` registers its handler in
`secateurs.structure.implant`. The registry is append-only.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.registry import TypeRegistry

Role = Literal["out", "in"]
"""``out``: the layer produces the channels (its filters); ``in``: it consumes them (its input slices)."""
Kind = Literal["filter", "norm"]
"""``filter``: the layer computes its output channels from weights (conv, linear); ``norm``: it scales
or normalises each channel on its own (batch norm)."""

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class ChannelChange:
    """What a channel removal does to one layer."""

    out_kept: torch.Tensor
    """Boolean per output channel: True = the channel stays."""
    in_kept: int
    """Input channels that stay."""
    implanted: int = 0
    """Kept output channels whose filters become 1×1 implants (plain convolutions only)."""


@dataclass(frozen=True)
class LayerSize:
    params: int
    """Parameters of the layer (weights and biases)."""
    mac_weights: int
    """Weight entries that cost one multiply-accumulate per output position."""


class LayerHandler(ABC, Generic[ModuleT]):
    """Channel slicing, composition, size rule and (for non-native types) surgery of one module type."""

    kind: ClassVar[Kind] = "filter"
    composite: ClassVar[bool] = False
    """True when the layer's weights live in leaf layers with handlers of their own (`leaves`)."""
    native: ClassVar[bool] = True
    """True when Torch-Pruning prunes this type itself; otherwise `remove_channels` does."""
    label: ClassVar[str] = ""
    """How error messages name the accepted types (default: the registered class's name)."""

    @abstractmethod
    def channels(self, module: ModuleT, role: Role) -> int:
        """The layer's output (``out``) or input (``in``) channel count."""

    @abstractmethod
    def rows(self, module: ModuleT, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        """The slices of ``tensor`` (shaped like `layout`) for channels ``indices``, as ``(len(indices), -1)``.

        Row i belongs to channel ``indices[i]``; nothing is copied where indexing allows a view.
        """

    @abstractmethod
    def size(self, module: ModuleT, change: ChannelChange) -> LayerSize:
        """Parameters and MAC-costing weight entries of the layer after ``change`` (nothing is modified)."""

    def ties(self, module: ModuleT, role: Role) -> int:
        """Channels per position that must be removed together (grouped convolutions); 0: no ties."""
        return 0

    def leaves(self, module: ModuleT) -> list[tuple[str, nn.Module]]:
        """The leaf layers holding this layer's weights, by name relative to it (``""``: itself)."""
        return [("", module)]

    def weight(self, module: ModuleT) -> torch.Tensor:
        """The (effective) weight of a leaf layer: ``module.weight`` unless the handler says otherwise."""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise StructureError(
                f"{type(module).__name__} has no tensor 'weight'; its layer handler must override weight()"
            )
        return weight

    def compose(self, module: ModuleT, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tensors shaped like the leaves' weights (in `leaves` order) placed into the layer's layout."""
        return pieces[0]

    def compose_out(self, module: ModuleT, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """One value per output channel of each leaf (in `leaves` order) → one per output channel here."""
        return values[0]

    def layout(self, module: ModuleT) -> torch.Tensor:
        """The layer's weight in the layout `rows` reads (the equivalent dense weight of a composite)."""
        return self.compose(module, leaf_weights(module))

    def macs(self, module: ModuleT, output: torch.Tensor, *, effective: bool = False) -> int:
        """Multiply-accumulates of one call that produced ``output``: output positions × weight entries.

        With ``effective`` only the non-zero entries of the effective weight count. Norms and
        composite layers cost none here (a composite's leaves are counted themselves).
        """
        if not self.counts_macs:
            return 0
        weight = self.weight(module)
        positions = output.numel() // self.channels(module, "out")
        return positions * (int(torch.count_nonzero(weight)) if effective else weight.numel())

    @property
    def counts_macs(self) -> bool:
        """Whether the layer's own weight costs MACs (a leaf filter: conv, linear, a custom one)."""
        return self.kind == "filter" and not self.composite

    def remove_channels(self, module: ModuleT, indices: Sequence[int], role: Role) -> None:
        """Remove channels ``indices`` (sorted, distinct) of ``role`` in place (non-native types only)."""
        raise StructureError(
            f"the layer handler of {type(module).__name__} cannot remove channels itself "
            "(Torch-Pruning prunes native types; a non-native handler must override remove_channels)"
        )

    def tracing(self, module: ModuleT) -> AbstractContextManager[None]:
        """Set-up around Torch-Pruning's trace of a model holding ``module`` (none by default)."""
        return contextlib.nullcontext()


LAYER_HANDLERS: TypeRegistry[LayerHandler[Any]] = TypeRegistry("layer handler")
"""Module type → its handler; `handler_for` looks a module up along its MRO."""

HandlerT = TypeVar("HandlerT", bound=LayerHandler[Any])


def register_layer_handler(module_type: type[nn.Module]) -> Callable[[type[HandlerT]], type[HandlerT]]:
    """Class decorator: register an instance of the decorated `LayerHandler` for ``module_type``.

    Subclasses of ``module_type`` use it too unless they register their own. Registering a type twice
    is a ``ValueError`` (the registry is append-only). Returns the class unchanged.
    """

    def decorator(handler: type[HandlerT]) -> type[HandlerT]:
        LAYER_HANDLERS.add(module_type, handler())
        return handler

    return decorator


def handler_for(module: nn.Module) -> LayerHandler[Any] | None:
    """The handler of ``module``'s type (the nearest registered class in its MRO), or None."""
    return LAYER_HANDLERS.lookup(type(module))


def accepted_layers() -> str:
    """The registered layer types, for error messages (``Conv2d, Linear, …``)."""
    return ", ".join(handler.label or kind.__name__ for kind, handler in LAYER_HANDLERS.items())


def filter_types() -> tuple[type[nn.Module], ...]:
    """Registered types whose output channels are filters: the layers a channel group starts from."""
    return tuple(kind for kind, handler in LAYER_HANDLERS.items() if handler.kind == "filter")


def leaf_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights of ``module``'s leaf layers, in its handler's `leaves` order (``[weight]`` for a leaf)."""
    handler = _required(module)
    if not handler.composite:
        return [handler.weight(module)]
    return [_required(leaf).weight(leaf) for _, leaf in handler.leaves(module)]


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, LayerHandler[Any]]]:
    """``(name, module, handler)`` of every leaf filter layer of ``model`` (conv, linear, custom ones),
    in module order: the layers whose weights cost MACs and enter the Hessian."""
    for name, module in model.named_modules():
        handler = handler_for(module)
        if handler is not None and handler.counts_macs:
            yield name, module, handler


def _required(module: nn.Module) -> LayerHandler[Any]:
    handler = handler_for(module)
    if handler is None:
        raise StructureError(f"{type(module).__name__} has no layer handler; accepted: {accepted_layers()}")
    return handler
