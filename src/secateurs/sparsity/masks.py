"""Masks as parametrizations, owned by one `MaskStore`.

A masked parameter ``layer.weight`` is registered with a `WeightMask` parametrization through
`torch.nn.utils.parametrize`; the raw tensor lives at ``layer.parametrizations.weight.original``.
Masks are *hard*, and the store keeps one invariant: **the masked entries of ``original`` are exactly
zero**. Setting a mask zeroes what it removes in the parameter and in every bound optimizer's state
(momentum, Adam moments); loading weights into a masked model (`load_plain_state_dict`) zeroes them
again. Given the invariant, ``original`` already *is* the masked weight,
so the parametrization's forward returns it unchanged and only the gradient is masked (``grad ⊙
mask``, by a hook on ``original``). Masked entries then get a zero gradient under ``backward()``,
``torch.autograd.grad`` and double backward alike, and stay exactly zero under SGD with momentum and
weight decay, Adam and AdamW. Masked training costs no extra element-wise pass over the weights in
the forward pass (``benchmarks/masked_step.py`` measures it against a dense step).

Convention: mask value 1/True means **keep**.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.errors import RunDirError, UsageError

_PARAMETRIZED_SUFFIX = ".parametrizations.{}.original"


class WeightMask(nn.Module):
    """The parametrization: the forward pass is the identity, the gradient is multiplied by ``mask``.

    ``mask`` is a buffer of the weight's dtype (1 keeps). The identity is exact because the store keeps
    the masked entries of the raw tensor at zero (module docstring). The gradient hook is registered
    on whichever tensor the forward receives, once per tensor: a deep copy of the model gets a fresh
    parameter (tensor hooks are not copied) and is hooked on its first forward.
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self._hooked: weakref.ref[torch.Tensor] | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.requires_grad and (self._hooked is None or self._hooked() is not weight):
            weight.register_hook(self._mask_gradient)
            self._hooked = weakref.ref(weight)
        return weight

    def _mask_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.mask


def canonical_name(name: str) -> str:
    """Map ``a.parametrizations.weight.original`` to ``a.weight`` (other names unchanged)."""
    marker = ".parametrizations."
    if marker in name and name.endswith(".original"):
        head, tail = name.split(marker, 1)
        return f"{head}.{tail[: -len('.original')]}"
    if name.startswith("parametrizations.") and name.endswith(".original"):
        return name[len("parametrizations.") : -len(".original")]
    return name


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the unmasked layout: ``a.weight`` keys, mask buffers dropped.

    Because masked entries of ``original`` are kept at zero, these are the effective weights.
    """
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not _is_mask_buffer(key):
            state[canonical_name(key)] = value
    return state


def _split(name: str) -> tuple[str, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return module_name, tensor_name


class MaskStore:
    """Every mask on one model, keyed by canonical parameter name (``features.0.weight``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._masks: dict[str, WeightMask] = {}
        self._originals: dict[str, torch.Tensor] = {}  # name → raw parameter, for the per-step enforce_
        self._optimizers: list[torch.optim.Optimizer] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.frozen = False

    # ----------------------------------------------------------------------------------- access
    def names(self) -> list[str]:
        return list(self._masks)

    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def __len__(self) -> int:
        return len(self._masks)

    def get(self, name: str) -> torch.Tensor:
        """The boolean keep-mask of parameter ``name``."""
        if name not in self._masks:
            raise UsageError(f"no mask on {name!r}; masked parameters: {', '.join(self._masks) or 'none'}")
        return self._masks[name].mask.bool()

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self._masks:
            yield name, self.get(name)

    def module(self, name: str) -> nn.Module:
        module_name, _ = _split(name)
        return self.model.get_submodule(module_name)

    def original(self, name: str) -> torch.Tensor:
        """The raw parameter under the mask (the one optimizers update)."""
        module_name, tensor_name = _split(name)
        module = self.model.get_submodule(module_name)
        if parametrize.is_parametrized(module, tensor_name):
            return getattr(module.parametrizations, tensor_name).original
        return getattr(module, tensor_name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Boolean masks keyed by canonical parameter name (what masks.safetensors holds)."""
        return {name: mask.clone() for name, mask in self.items()}

    # ---------------------------------------------------------------------------------- mutation
    def set_(self, name: str, mask: torch.Tensor) -> None:
        """Install or replace the keep-mask of parameter ``name``; zeroes what it removes.

        Mutates the model (registers a parametrization the first time), the parameter and the state
        of every bound optimizer.
        """
        if self.frozen and name in self._masks and not torch.equal(self.get(name), mask.bool()):
            raise UsageError(f"masks are frozen; refusing to change the mask of {name!r}")
        module_name, tensor_name = _split(name)
        try:
            module = self.model.get_submodule(module_name)
        except AttributeError:
            raise UsageError(f"the model has no module {module_name!r} (for mask {name!r})") from None
        current = getattr(module, tensor_name, None)
        if not isinstance(current, torch.Tensor):
            raise UsageError(f"module {module_name!r} has no tensor {tensor_name!r}")
        if tuple(mask.shape) != tuple(current.shape):
            raise UsageError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter has {tuple(current.shape)}"
            )
        value = mask.to(device=current.device, dtype=current.dtype)
        if name in self._masks:
            self._masks[name].mask.copy_(value)
        else:
            parametrization = WeightMask(value)
            parametrize.register_parametrization(module, tensor_name, parametrization, unsafe=True)
            self._masks[name] = parametrization
            self._originals[name] = self.original(name)
        self._zero_masked(name)

    def update_(self, masks: Mapping[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self.set_(name, mask)

    def load_state_dict(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.update_(masks)

    def freeze(self) -> None:
        """Refuse any later change of an existing mask (Campfire freezes masks after ``end``)."""
        self.frozen = True

    @torch.no_grad()
    def _zero_masked(self, name: str) -> None:
        mask = self._masks[name].mask
        original = self.original(name)
        original.mul_(mask)
        for optimizer in self._optimizers:
            state = optimizer.state.get(original)
            if not state:
                continue
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == original.shape:
                    value.mul_(mask)

    @torch.no_grad()
    def enforce_(self) -> None:
        """Zero every masked entry of every masked parameter (restores the invariant after a raw write).

        Called when weights are loaded into a masked model, and after every step of an optimizer bound
        with ``enforce_each_step``.
        """
        if self._masks:
            originals = [self._originals[name] for name in self._masks]
            torch._foreach_mul_(originals, [parametrization.mask for parametrization in self._masks.values()])

    def bind_optimizer(self, optimizer: torch.optim.Optimizer, *, enforce_each_step: bool = False) -> None:
        """Keep ``optimizer``'s state under the masks (hard masks): zeroed now and whenever a mask changes.

        With zero state and a masked gradient, every `torch.optim` optimizer leaves masked entries at
        exactly zero (SGD with momentum, Nesterov and weight decay; Adam, AdamW, RMSprop, Adagrad…), so
        no per-step work is needed. ``enforce_each_step`` adds `enforce_` after every step, for an
        optimizer that can move a weight whose gradient and state are zero.
        """
        if any(optimizer is bound for bound in self._optimizers):
            return
        self._optimizers.append(optimizer)
        if enforce_each_step:
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.enforce_()))
        for name in self._masks:
            self._zero_masked(name)

    def unbind_optimizers(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._optimizers.clear()

    def remove(self) -> None:
        """Bake the masks into plain parameters (zeros stay) and drop every parametrization."""
        self.unbind_optimizers()
        for name in list(self._masks):
            module_name, tensor_name = _split(name)
            module = self.model.get_submodule(module_name)
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
        self._masks.clear()
        self._originals.clear()

    # ------------------------------------------------------------------------------- statistics
    def counts(self) -> dict[str, tuple[int, int]]:
        """``name → (kept, total)`` for every masked parameter."""
        result = {}
        for name, mask in self.items():
            result[name] = (int(mask.sum()), mask.numel())
        return result

    def sparsity(self, names: Iterable[str] | None = None) -> float:
        """Fraction of entries removed over ``names`` (all masked parameters by default)."""
        counts = self.counts()
        selected = list(names) if names is not None else list(counts)
        kept = sum(counts[n][0] for n in selected)
        total = sum(counts[n][1] for n in selected)
        return 1.0 - kept / total if total else 0.0

    @classmethod
    def attached(cls, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> MaskStore:
        """A store for ``model``, adopting masks that are already parametrizations on it."""
        store = cls(model)
        for module_name, module in model.named_modules():
            if not parametrize.is_parametrized(module):
                continue
            for tensor_name, parametrizations in module.parametrizations.items():
                for parametrization in parametrizations:
                    if isinstance(parametrization, WeightMask):
                        key = f"{module_name}.{tensor_name}" if module_name else tensor_name
                        store._masks[key] = parametrization
                        store._originals[key] = getattr(module.parametrizations, tensor_name).original
        if masks:
            store.update_(masks)
        return store


def independent_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parametrized modules have classes of their own.

    ``copy.deepcopy`` shares the class `parametrize` injected into each parametrized module, and
    removing a parametrization deletes the property from that class, which would break the original
    (``'ParametrizedConv2d' object has no attribute 'weight'``). Copy with this before removing masks.
    """
    import copy

    clone = copy.deepcopy(model)
    for module in clone.modules():
        if parametrize.is_parametrized(module):
            injected = type(module)
            members = {k: v for k, v in vars(injected).items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(injected.__name__, injected.__bases__, members)
    return clone


def baked_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every mask multiplied in and the parametrizations removed.

    This is the deployable form of a masked model (plain layers whose pruned weights are zero): what
    latency is measured on and what is exported. ``model`` is not changed.
    """
    clone = independent_copy(model)
    MaskStore.attached(clone).remove()
    return clone


def load_plain_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: object = "weights") -> None:
    """Load a plain-layout state dict (``a.weight`` keys) into ``model``, masked or not.

    Strict: every key must exist with the same shape; a mismatch is a `RunDirError` naming the key,
    the shape found and the shape expected. Mutates ``model``.
    """
    own = model.state_dict()
    by_canonical = {canonical_name(key): key for key in own if not _is_mask_buffer(key)}
    missing = sorted(set(by_canonical) - set(state))
    unexpected = sorted(set(state) - set(by_canonical))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
        if unexpected:
            detail.append(f"unexpected {', '.join(unexpected[:4])}{' …' if len(unexpected) > 4 else ''}")
        raise RunDirError(f"{source} does not match the model: {'; '.join(detail)}")
    remapped = {}
    for name, tensor in state.items():
        key = by_canonical[name]
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise RunDirError(
                f"{source} does not match the model: {name} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
        remapped[key] = tensor
    with torch.no_grad():
        for key, tensor in remapped.items():
            own[key].copy_(tensor)
    MaskStore.attached(model).enforce_()  # weights saved without masks may hold values where masked


def _is_mask_buffer(key: str) -> bool:
    return (".parametrizations." in key or key.startswith("parametrizations.")) and not key.endswith(".original")
