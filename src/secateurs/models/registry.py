"""The model registry: every architecture in the zoo registers its factory here.

A factory is a function taking keyword-only ``in_channels``, ``image_size`` and ``num_classes`` and
returning an ``nn.Module`` whose final layer is the ``nn.Linear`` attribute ``classifier``. Model
files decorate their factories with `register_model`; `build_model` is the one entry point the rest of
secateurs uses, and it checks the dataset's input shape against the architecture before building.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

from secateurs.errors import UsageError
from secateurs.registry import Registry

MODEL_KINDS = ("mlp", "conv")
"""``mlp`` models see flattened inputs; ``conv`` models are trained with ``channels_last``."""

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    ``factory`` is called as ``factory(in_channels=, image_size=, num_classes=)``. ``min_image_size``
    is the smallest square side length for which every layer's output is non-empty; `build_model`
    refuses smaller inputs.
    """

    name: str
    factory: Callable[..., nn.Module]
    kind: str
    description: str
    min_image_size: int = 1


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, *, kind: str, description: str, min_image_size: int = 1) -> Callable[[F], F]:
    """Decorator: register the decorated factory under ``name`` and return it unchanged.

    Raises ``ValueError`` (a programming error, not a usage error) for an unknown ``kind``, a
    non-positive ``min_image_size`` or a name that is already taken.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model {name!r}: kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    if min_image_size < 1:
        raise ValueError(f"model {name!r}: min_image_size must be at least 1, got {min_image_size}")

    def decorator(factory: F) -> F:
        MODELS.add(
            name,
            ModelEntry(
                name=name,
                factory=factory,
                kind=kind,
                description=description,
                min_image_size=min_image_size,
            ),
        )
        return factory

    return decorator


def model_entry(name: str) -> ModelEntry:
    """Return the entry registered as ``name``; an unknown name is a `UsageError` listing the accepted ones."""
    return MODELS.get(name)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build a freshly initialised model ``name`` for inputs of ``input_shape`` = (C, H, W).

    Returns the module with PyTorch's default initialisation. Raises `UsageError` for an unknown
    name, a shape that is not three positive sizes, a non-square image, an image smaller than the
    architecture's minimum, or fewer than one class.
    """
    entry = model_entry(name)
    if len(input_shape) != 3 or any(size < 1 for size in input_shape):
        raise UsageError(
            f"model {name!r}: input shape must be three positive sizes (C, H, W), got {tuple(input_shape)}"
        )
    channels, height, width = input_shape
    if height != width:
        raise UsageError(
            f"model {name!r}: images must be square, got {height}×{width}; accepted: H == W >= {entry.min_image_size}"
        )
    if height < entry.min_image_size:
        raise UsageError(
            f"model {name!r}: images of {height}×{width} are too small; accepted: H == W >= {entry.min_image_size}"
        )
    if num_classes < 1:
        raise UsageError(f"model {name!r}: num_classes must be at least 1, got {num_classes}")
    return entry.factory(in_channels=channels, image_size=height, num_classes=num_classes)
