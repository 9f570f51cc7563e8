"""Sparse (CSR) inference for unstructured-pruned models.

A masked model computes with dense weights full of zeros: pruning saves nothing at inference until the
zeros are skipped. This module swaps the sparse layers of a model for CSR layers:

* `CSRLinear` keeps its weight ``W`` (out × in) as a ``torch.sparse_csr`` matrix and computes
  ``y = (W · xᵀ)ᵀ + b`` with ``torch.addmm(b[:, None], W, xᵀ)``: the sparse matrix on the **left**
  (PyTorch's fast CPU path, MKL sparse BLAS); ``F.linear`` with a CSR weight fails under
  ``torch.inference_mode()`` and is slow under ``no_grad`` (ENVIRONMENT.md). The result is returned as
  the transposed view of the (out × N) product, so a following `CSRLinear` gets a contiguous ``xᵀ``
  without copying.
* `CSRConv2d` runs a convolution as that same product through im2col: ``F.unfold`` turns the input
  into columns (C·kh·kw × N·L), the CSR weight (out × C·kh·kw) multiplies them, and the result is
  viewed back as (N, out, H', W'). Only ``groups == 1`` and zero padding are converted; other convs
  (depthwise, grouped, reflect padding, ``padding="same"``) stay dense.

Which layers become CSR is decided per layer by density (non-zeros ÷ entries): below
`DEFAULT_DENSITY_THRESHOLD` (0.2, the break-even measured on the project's CPU for linear layers at
batch 256: above about 20 % density the dense kernel wins) a layer is stored and run as CSR, at or
above it stays dense. im2col copies its input k² times, so convolutions usually need a lower density
than linear layers to pay; the threshold is one number for both (documented, configurable).
Converting a model in which no layer qualifies is refused: there is nothing to gain.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.errors import UsageError
from secateurs.sparsity.masks import baked_copy

__all__ = [
    "DEFAULT_DENSITY_THRESHOLD",
    "CSRConv2d",
    "CSRConversion",
    "CSRLinear",
    "LayerChoice",
    "choose_layers",
    "conv_geometry",
    "conv_unsupported_reason",
    "convert_to_csr",
    "csr_matrix",
    "csr_module_for",
    "nothing_to_gain_message",
    "validate_density_threshold",
]

DEFAULT_DENSITY_THRESHOLD = 0.2
"""Layers with density below this run as CSR (measured break-even of CSR vs dense matmul here)."""


def validate_density_threshold(threshold: float) -> float:
    """Return `threshold` if it is a number in (0, 1]; otherwise raise `UsageError`."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold <= 1.0:
        raise UsageError(f"the CSR density threshold must be a number in (0, 1]; got {threshold!r}")
    return float(threshold)


def csr_matrix(dense: torch.Tensor) -> torch.Tensor:
    """The 2-D `dense` matrix as a ``torch.sparse_csr`` tensor, explicit zeros dropped.

    Indices are int32 (the index type of MKL's sparse BLAS; measured a few per cent faster than int64
    here, and half the bytes on disk), int64 when the matrix is too large for int32.
    """
    if dense.dim() != 2:
        raise UsageError(f"a CSR matrix needs a 2-D tensor; got shape {tuple(dense.shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR tensor support is in beta state"
        matrix = dense.detach().to_sparse_csr()
        if max(matrix.values().numel(), *matrix.shape) < 2**31 - 1:
            matrix = torch.sparse_csr_tensor(
                matrix.crow_indices().to(torch.int32),
                matrix.col_indices().to(torch.int32),
                matrix.values(),
                size=matrix.shape,
            )
        return matrix


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class CSRLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` a CSR buffer, computed as ``(W · xᵀ)ᵀ`` (sparse matrix on the left).

    Accepts inputs of shape (…, in_features); returns (…, out_features). For a 2-D input the result is
    a transposed view (its ``.T`` is contiguous), which the next `CSRLinear` consumes without a copy.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.layout != torch.sparse_csr or weight.dim() != 2:
            raise UsageError(f"CSRLinear needs a 2-D sparse CSR weight; got {weight.layout} {tuple(weight.shape)}")
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_dense(cls, layer: nn.Linear) -> CSRLinear:
        """The CSR version of `layer` (its zero weights dropped); `layer` is not changed."""
        return cls(csr_matrix(layer.weight), layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        columns = x.reshape(-1, self.in_features).T
        if self.bias is None:
            product = torch.sparse.mm(self.weight, columns)
        else:
            product = torch.addmm(self.bias.unsqueeze(1), self.weight, columns)
        return product.T.reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        nnz = int(self.weight.values().numel())
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={nnz}"


class CSRConv2d(nn.Module):
    """A ``groups=1``, zero-padded Conv2d as CSR weight × im2col columns.

    ``weight`` is the convolution weight flattened to (out_channels, in_channels·kh·kw) in CSR.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        in_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> None:
        super().__init__()
        expected = in_channels * kernel_size[0] * kernel_size[1]
        if weight.layout != torch.sparse_csr or weight.dim() != 2 or int(weight.shape[1]) != expected:
            raise UsageError(
                f"CSRConv2d needs a sparse CSR weight of shape (out, {expected}); "
                f"got {weight.layout} {tuple(weight.shape)}"
            )
        self.out_channels = int(weight.shape[0])
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_dense(cls, layer: nn.Conv2d) -> CSRConv2d:
        """The CSR version of `layer` (see `conv_unsupported_reason` for what qualifies)."""
        return cls(csr_matrix(layer.weight.reshape(layer.out_channels, -1)), layer.bias, **conv_geometry(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        columns = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        positions = columns.shape[-1]
        flat = columns.transpose(0, 1).reshape(columns.shape[1], batch * positions)
        if self.bias is None:
            product = torch.sparse.mm(self.weight, flat)
        else:
            product = torch.addmm(self.bias.unsqueeze(1), self.weight, flat)
        out_height = _out_size(height, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0])
        out_width = _out_size(width, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1])
        return product.reshape(self.out_channels, batch, out_height, out_width).permute(1, 0, 2, 3)

    def conv_options(self) -> dict[str, list[int]]:
        """The geometry a file needs to rebuild this layer (JSON-able)."""
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
        }

    def extra_repr(self) -> str:
        nnz = int(self.weight.values().numel())
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, nnz={nnz}"
        )


def _pair(value: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(value, str):
        raise UsageError(f"expected an int or a pair of ints; got {value!r}")
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def conv_geometry(layer: nn.Conv2d) -> dict[str, Any]:
    """``in_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation`` of a convertible Conv2d."""
    reason = conv_unsupported_reason(layer)
    if reason:
        raise UsageError(f"cannot run this Conv2d as CSR: {reason}")
    return {
        "in_channels": layer.in_channels,
        "kernel_size": _pair(layer.kernel_size),
        "stride": _pair(layer.stride),
        "padding": _pair(layer.padding),
        "dilation": _pair(layer.dilation),
    }


def conv_unsupported_reason(layer: nn.Conv2d) -> str:
    """Why `layer` cannot run as `CSRConv2d` ("" when it can)."""
    if layer.groups != 1:
        return f"groups={layer.groups} (only groups=1 is converted)"
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r} (only zero padding is converted)"
    if isinstance(layer.padding, str):
        return f"padding={layer.padding!r} (only numeric padding is converted)"
    return ""


@dataclass(frozen=True)
class LayerChoice:
    """The storage decided for one Linear/Conv2d layer: ``"csr"`` or ``"dense"``, with the reason."""

    name: str
    kind: str
    shape: tuple[int, ...]
    nonzeros: int
    density: float
    storage: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "nonzeros": self.nonzeros,
            "density": self.density,
            "storage": self.storage,
            "reason": self.reason,
        }


def _candidate_layers(model: nn.Module) -> Iterator[tuple[str, nn.Linear | nn.Conv2d]]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            yield name, module


def choose_layers(model: nn.Module, density_threshold: float = DEFAULT_DENSITY_THRESHOLD) -> list[LayerChoice]:
    """Decide, per Linear/Conv2d layer of `model` (masked or baked), CSR or dense; pure (nothing mutated).

    A layer becomes CSR when its weight's density (non-zeros ÷ entries of the *effective* weight, masks
    applied) is below `density_threshold` and, for a Conv2d, `conv_unsupported_reason` is empty.
    """
    threshold = validate_density_threshold(density_threshold)
    choices = []
    for name, module in _candidate_layers(model):
        weight = module.weight.detach()
        nonzeros = int(torch.count_nonzero(weight))
        density = nonzeros / weight.numel()
        kind = "linear" if isinstance(module, nn.Linear) else "conv2d"
        unsupported = conv_unsupported_reason(module) if isinstance(module, nn.Conv2d) else ""
        if unsupported:
            storage, reason = "dense", unsupported
        elif density < threshold:
            storage, reason = "csr", f"density {density:.3f} < {threshold:g}"
        else:
            storage, reason = "dense", f"density {density:.3f} >= {threshold:g}"
        choices.append(LayerChoice(name, kind, tuple(weight.shape), nonzeros, density, storage, reason))
    return choices


def csr_module_for(module: nn.Module) -> CSRLinear | CSRConv2d:
    """The CSR replacement of a Linear or a (groups=1, zero-padded) Conv2d."""
    if isinstance(module, nn.Linear):
        return CSRLinear.from_dense(module)
    if isinstance(module, nn.Conv2d):
        return CSRConv2d.from_dense(module)
    raise UsageError(f"only Linear and Conv2d layers run as CSR; got {type(module).__name__}")


@dataclass(frozen=True)
class CSRConversion:
    """A model whose sparse layers are CSR modules, with the per-layer decisions that produced it."""

    model: nn.Module
    layers: tuple[LayerChoice, ...]
    density_threshold: float

    @property
    def csr_layers(self) -> list[LayerChoice]:
        return [layer for layer in self.layers if layer.storage == "csr"]

    def summary(self) -> dict[str, object]:
        """JSON-able: threshold, layer counts, non-zeros kept in CSR, and every decision."""
        csr = self.csr_layers
        return {
            "density_threshold": self.density_threshold,
            "csr_layers": len(csr),
            "dense_layers": len(self.layers) - len(csr),
            "csr_nonzeros": sum(layer.nonzeros for layer in csr),
            "csr_entries": sum(_numel(layer.shape) for layer in csr),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def nothing_to_gain_message(choices: list[LayerChoice], threshold: float) -> str:
    """The one-line refusal for a model in which no layer would run faster as CSR."""
    if not choices:
        return "nothing to gain from CSR: the model has no Linear or Conv2d layer to store sparse"
    sparsest = min(choices, key=lambda layer: layer.density)
    return (
        f"nothing to gain from CSR: no Linear/Conv2d weight is below the density threshold {threshold:g} "
        f"(the sparsest, {sparsest.name}, has density {sparsest.density:.3f}); above about 20 % density "
        f"CSR matrix products are slower than dense ones on this CPU (measured break-even), so the dense "
        f"model is already the fast one. Prune it unstructured first (e.g. --method magnitude --sparsity 0.9) "
        f"or raise the density threshold"
    )


def convert_to_csr(model: nn.Module, *, density_threshold: float = DEFAULT_DENSITY_THRESHOLD) -> CSRConversion:
    """A copy of `model` (masked or not) whose sparse Linear/Conv2d layers are `CSRLinear`/`CSRConv2d`.

    Masks are baked in first (masked weights are zero), then each layer `choose_layers` marks ``csr`` is
    replaced; every other module is kept as it is, dense. `model` is not changed; the copy is in eval
    mode. Raises `UsageError` (nothing to gain) when no layer qualifies.
    """
    threshold = validate_density_threshold(density_threshold)
    clone = baked_copy(model)
    clone.eval()
    choices = choose_layers(clone, threshold)
    if not any(layer.storage == "csr" for layer in choices):
        raise UsageError(nothing_to_gain_message(choices, threshold))
    for layer in choices:
        if layer.storage != "csr":
            continue
        replacement = csr_module_for(clone.get_submodule(layer.name))
        if layer.name:
            clone.set_submodule(layer.name, replacement)
        else:  # the model itself is one Linear/Conv2d
            clone = replacement
    return CSRConversion(model=clone, layers=tuple(choices), density_threshold=threshold)
