"""Parameter, non-zero and MAC counts of a model, masked or physically pruned.

Every count works on the *effective* weights: a layer masked with a `torch.nn.utils.parametrize`
parametrization is counted through ``module.weight`` (``original * mask``), so masked entries count as
zeros whatever is stored in ``original``. A physically pruned model is an ordinary, smaller module and
needs nothing special.

What counts as prunable, and what MACs are counted
--------------------------------------------------
* The *prunable weights* are the ``weight`` of every ``nn.Conv2d`` and ``nn.Linear`` module (subclasses
  included, e.g. the parametrized classes ``parametrize`` creates). Custom modules (a neural implant
  that concatenates a k×k and a 1×1 conv, a squeeze-excite block) are counted through the
  Conv2d/Linear leaves they contain; they need no special case.
* MACs are the multiply-accumulates of the Conv2d and Linear layers only (and of any layer type with a
  registered handler, `secateurs.layers`), for **one** input example:
  ``output positions × weight.numel()`` per call, where the output positions are ``H_out·W_out`` for a
  conv (groups are handled by the weight's shape ``C_out × C_in/groups × k × k``) and the number of
  input rows for a linear layer. Biases, batch norm, activations, pooling, additions and
  concatenations are **not** counted. With ``effective=True`` the number of non-zero entries of the
  effective weight replaces ``weight.numel()``: each zero weight skips exactly one MAC per output
  position, so this is exact for unstructured sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.errors import UsageError
from secateurs.layers import LayerHandler, weight_layers

__all__ = [
    "SizeReport",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "count_prunable",
    "model_device_and_dtype",
    "prunable_weights",
    "size_report",
    "validate_input_shape",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def validate_input_shape(input_shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Return `input_shape` as a tuple of positive ints (one example, no batch dimension).

    Raises `UsageError` naming the shape when it is empty or holds anything but positive integers.
    """
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise UsageError(
            f"input_shape must be a non-empty tuple of positive ints without the batch dimension "
            f"(e.g. (1, 28, 28)); got {input_shape!r}"
        )
    return shape


def model_device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype an input for `model` should have.

    The device is that of the first parameter or buffer (CPU when there is none); the dtype is that of
    the first floating-point parameter or buffer (float32 when there is none).
    """
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


def _weight(module: nn.Module) -> torch.Tensor:
    """The effective ``weight`` of a Conv2d/Linear module (computed through any parametrization)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise UsageError(f"expected a tensor weight on {type(module).__name__}; got {type(weight).__name__}")
    return weight


def _effective_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Yield every parameter of `model` once, a parametrized one as its effective value.

    A parametrized tensor (``module.parametrizations.weight.original``) is replaced by the computed
    ``module.weight``; parameters shared between modules are yielded once. Call under ``no_grad``.
    """
    replaced: set[int] = set()
    effective: list[torch.Tensor] = []
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        parametrizations = module.parametrizations
        assert isinstance(parametrizations, nn.ModuleDict)
        for name, parametrization_list in parametrizations.items():
            originals = list(parametrization_list.parameters(recurse=False))
            if not originals or any(id(p) in replaced for p in originals):
                continue
            replaced.update(id(p) for p in originals)
            effective.append(getattr(module, name))
    yield from effective
    for parameter in model.parameters():  # parameters() already drops duplicates
        if id(parameter) not in replaced:
            yield parameter


def count_params(model: nn.Module) -> int:
    """Number of parameters of `model`; a parametrized weight counts once, as its ``original``.

    Mask buffers are not parameters and are not counted; shared parameters count once.
    """
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameters that are non-zero in the effective weights (``original * mask``)."""
    with torch.no_grad():
        return sum(int(torch.count_nonzero(t)) for t in _effective_tensors(model))


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The prunable layers of `model`: every Conv2d and Linear module, in registration order.

    Returns ``(parameter name, module)`` pairs where the name is the qualified name of the layer's
    weight as the rest of secateurs keys it (masks, scores, plans): ``"features.0.weight"``, or
    ``"weight"`` when `model` itself is the layer. The module's effective weight is ``module.weight``.
    """
    return [
        (f"{name}.weight" if name else "weight", module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    ]


def count_prunable(model: nn.Module) -> tuple[int, int]:
    """``(total, non-zero)`` entries of the prunable weights (effective weights, masks applied)."""
    total = 0
    nonzero = 0
    with torch.no_grad():
        for _, module in prunable_weights(model):
            weight = _weight(module)
            total += weight.numel()
            nonzero += int(torch.count_nonzero(weight))
    return total, nonzero


def count_macs(model: nn.Module, input_shape: tuple[int, ...], *, effective: bool = False) -> int:
    """Multiply-accumulates of the conv and linear layers of `model` for ONE input example.

    Runs one forward pass in eval mode under ``torch.no_grad()`` on zeros of shape
    ``(1, *input_shape)`` (the model's device and dtype), with forward hooks on every leaf filter
    layer (`secateurs.layers.weight_layers`: Conv2d, Linear, and any layer type with a registered
    handler); a module called several times counts each call. Per call the layer's handler counts
    (`LayerHandler.macs`): ``output positions × weight.numel()``, or × the number of non-zero entries
    of the effective weight when `effective`. Biases, normalisation, activations, pooling and
    additions are not counted (see the module docstring). Mutates nothing: every module's training
    flag is restored and the hooks are removed, also when the forward pass raises.
    """
    shape = validate_input_shape(input_shape)
    device, dtype = model_device_and_dtype(model)
    total = 0

    def hook_for(handler: LayerHandler[Any]) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            nonlocal total
            if not isinstance(output, torch.Tensor):
                raise UsageError(f"expected a tensor output from {type(module).__name__}; got {type(output).__name__}")
            total += handler.macs(module, output, effective=effective)

        return hook

    training_flags = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(hook_for(handler)) for _, module, handler in weight_layers(model)]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in training_flags.items():
            module.training = training
    return total


def _fraction_removed(kept: int, reference: int) -> float:
    """``1 - kept / reference``; 0.0 when the reference is empty."""
    return 1.0 - kept / reference if reference else 0.0


@dataclass(frozen=True)
class SizeReport:
    """Sizes of a model and the sparsities they amount to (see `size_report`).

    Sparsity is the fraction *removed* relative to a dense reference: of the prunable weights, of
    all parameters, and of MACs. It can be negative when the model is larger than the reference.
    """

    params: int
    nonzero_params: int
    prunable_params: int
    nonzero_prunable: int
    macs: int
    effective_macs: int
    sparsity_prunable: float
    sparsity_params: float
    sparsity_macs: float

    def to_dict(self) -> dict[str, int | float]:
        """The fields as a plain JSON-serialisable dict (ints and floats)."""
        return {key: value for key, value in asdict(self).items()}


def size_report(
    model: nn.Module, input_shape: tuple[int, ...], *, dense_reference: SizeReport | None = None
) -> SizeReport:
    """Count `model` and express its sparsities relative to `dense_reference`.

    With a reference (the report of the dense model, same `input_shape`):
    ``sparsity_prunable = 1 - nonzero_prunable / reference.prunable_params``,
    ``sparsity_params = 1 - nonzero_params / reference.params`` and
    ``sparsity_macs = 1 - effective_macs / reference.macs``. Without one, the model is its own
    reference (``params``, ``prunable_params``, ``macs``): right for a masked model, whereas a
    physically pruned model needs the dense reference to report what was removed. Note that
    parameters that happen to be zero (e.g. batch-norm biases at initialisation) count as removed.
    Mutates nothing.
    """
    params = count_params(model)
    nonzero_params = count_nonzero_params(model)
    prunable_params, nonzero_prunable = count_prunable(model)
    macs = count_macs(model, input_shape)
    effective_macs = count_macs(model, input_shape, effective=True)
    reference_params = dense_reference.params if dense_reference else params
    reference_prunable = dense_reference.prunable_params if dense_reference else prunable_params
    reference_macs = dense_reference.macs if dense_reference else macs
    return SizeReport(
        params=params,
        nonzero_params=nonzero_params,
        prunable_params=prunable_params,
        nonzero_prunable=nonzero_prunable,
        macs=macs,
        effective_macs=effective_macs,
        sparsity_prunable=_fraction_removed(nonzero_prunable, reference_prunable),
        sparsity_params=_fraction_removed(nonzero_params, reference_params),
        sparsity_macs=_fraction_removed(effective_macs, reference_macs),
    )
