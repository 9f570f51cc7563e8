"""Layer handlers: the one place per module type that knows its channels, its size and its surgery.

Importing this package registers the built-in handlers (``nn.Conv2d``, ``nn.Linear``, batch norm).
Add a handler for your own layer with `register_layer_handler` (see `secateurs.layers.base`).
"""

from secateurs.layers import batchnorm, conv, linear
from secateurs.layers.base import (
    LAYER_HANDLERS,
    ChannelChange,
    Kind,
    LayerHandler,
    LayerSize,
    Role,
    accepted_layers,
    filter_types,
    handler_for,
    leaf_weights,
    register_layer_handler,
    weight_layers,
)

__all__ = [
    "LAYER_HANDLERS",
    "ChannelChange",
    "Kind",
    "LayerHandler",
    "LayerSize",
    "Role",
    "accepted_layers",
    "batchnorm",
    "conv",
    "filter_types",
    "handler_for",
    "leaf_weights",
    "linear",
    "register_layer_handler",
    "weight_layers",
]
