"""The model registry: every architecture in the zoo registers its factory here.

A factory is a function taking keyword-only ``in_channels``, ``image_size`` and ``num_classes`` and
returning an ``nn.Module`` whose final layer is the ``nn.Linear`` attribute ``classifier``. Model
files decorate their factories with `register_model`; `build_model` (or `resolve_model`, which also
returns the model's provenance) is the one entry point the rest of secateurs uses: it checks the
dataset's input shape against a zoo architecture before building, and routes external references
(``timm:NAME``, ``python:module:factory``, ``FILE.py:factory``) to `secateurs.models.external`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from secateurs.errors import UsageError
from secateurs.models.external import (
    EXTERNAL_FORMS,
    BuiltModel,
    ModelReference,
    as_reference,
    check_reference,
    parse_reference,
    resolve_external,
)
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
    """Return the entry registered as ``name``; an unknown name is a `UsageError` listing the accepted ones
    (and how external models are named)."""
    if name not in MODELS:
        raise UsageError(
            f"unknown model {name!r}; accepted: {', '.join(MODELS.names())}, or an external model: {EXTERNAL_FORMS}"
        )
    return MODELS.get(name)


def check_model(model: str | ModelReference) -> None:
    """Refuse (`UsageError`) a zoo name that is not registered, or an external reference that does not
    resolve (its timm name, module, file or factory), without building the model."""
    reference = as_reference(model)
    if parse_reference(reference.name) is None:
        model_entry(reference.name)
        _no_args(reference)
    else:
        check_reference(reference)


def build_model(
    model: str | ModelReference,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a freshly initialised model for inputs of ``input_shape`` = (C, H, W) (`resolve_model`'s module)."""
    return resolve_model(model, input_shape, num_classes, args=args).module


def resolve_model(
    model: str | ModelReference,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    args: Mapping[str, Any] | None = None,
) -> BuiltModel:
    """Build ``model`` (a zoo name, an external reference, or a `ModelReference`) for ``input_shape``.

    Returns the module with its default initialisation and its `Provenance` (empty for the zoo).
    ``args`` (model args; or the reference's own) go to an external model's factory; a zoo model takes
    none. Raises `UsageError` for an unknown name, a shape that is not three positive sizes, a
    non-square image, an image smaller than the architecture's minimum, fewer than one class, or any
    failure of an external reference (`secateurs.models.external.resolve_external`).
    """
    reference = as_reference(model)
    if args is not None:
        reference = ModelReference(reference.name, dict(args), reference.recorded, reference.allow_changed)
    name = reference.name
    target = parse_reference(name)
    entry = model_entry(name) if target is None else None
    if len(input_shape) != 3 or any(size < 1 for size in input_shape):
        raise UsageError(
            f"model {name!r}: input shape must be three positive sizes (C, H, W), got {tuple(input_shape)}"
        )
    if num_classes < 1:
        raise UsageError(f"model {name!r}: num_classes must be at least 1, got {num_classes}")
    if target is not None:
        return resolve_external(reference, target, tuple(input_shape), num_classes)
    assert entry is not None
    _no_args(reference)
    channels, height, width = input_shape
    if height != width:
        raise UsageError(
            f"model {name!r}: images must be square, got {height}×{width}; accepted: H == W >= {entry.min_image_size}"
        )
    if height < entry.min_image_size:
        raise UsageError(
            f"model {name!r}: images of {height}×{width} are too small; accepted: H == W >= {entry.min_image_size}"
        )
    return BuiltModel(entry.factory(in_channels=channels, image_size=height, num_classes=num_classes))


def _no_args(reference: ModelReference) -> None:
    if reference.args:
        raise UsageError(
            f"model {reference.name!r} is a zoo model and takes no model args (got {', '.join(reference.args)}); "
            f"model args are for external models: {EXTERNAL_FORMS}"
        )
