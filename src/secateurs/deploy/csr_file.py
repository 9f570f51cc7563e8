"""The CSR model file: one safetensors file, no pickle.

Layout (format ``secateurs-csr/1``)::

    <layer>.weight.crow_indices   int32 (rows + 1)      ┐ for every layer stored in CSR:
    <layer>.weight.col_indices    int32 (nnz)           │ rows × cols is (out, in) for a Linear and
    <layer>.weight.values         float (nnz)           ┘ (out, in·kh·kw) for a Conv2d
                                  (int64 indices for matrices too large for int32)
    <every other tensor>          dense, under its state-dict name (biases, BatchNorm, dense layers)

The safetensors metadata holds one key, ``secateurs``, a JSON header: the format tag, the architecture
(``model``: registry name, input shape, classes; ``plan``: the physical-pruning plan or null), the
preprocessing, the density threshold and, per CSR layer, its kind, shape, non-zeros and (for convs)
geometry. `load_csr_model` rebuilds the architecture (the zoo model or external reference the header
records, then the plan replayed; or a factory the caller passes), swaps the CSR layers in and loads
the dense tensors strictly.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from torch import nn

from secateurs.config import format_validation_error
from secateurs.deploy.csr import CSRConv2d, CSRConversion, CSRLinear, conv_geometry
from secateurs.errors import RunDirError, UsageError
from secateurs.io.files import save_tensors
from secateurs.runs.directory import rebuild_model
from secateurs.runs.record import ModelSpec
from secateurs.structure.plan import replay_plan

__all__ = ["CSR_FORMAT", "CSRFile", "csr_header", "load_csr_model", "save_csr_model"]

CSR_FORMAT = "secateurs-csr/1"
HEADER_KEY = "secateurs"
PARTS = ("crow_indices", "col_indices", "values")


def _sparse_layers(model: nn.Module) -> dict[str, CSRLinear | CSRConv2d]:
    return {name: module for name, module in model.named_modules() if isinstance(module, CSRLinear | CSRConv2d)}


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def csr_header(
    conversion: CSRConversion,
    *,
    model: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The JSON header for `conversion` (see the module docstring)."""
    layers: dict[str, dict[str, Any]] = {}
    for name, module in _sparse_layers(conversion.model).items():
        entry: dict[str, Any] = {
            "kind": "linear" if isinstance(module, CSRLinear) else "conv2d",
            "shape": list(module.weight.shape),
            "nonzeros": int(module.weight.values().numel()),
            "bias": module.bias is not None,
        }
        if isinstance(module, CSRConv2d):
            entry.update(in_channels=module.in_channels, **module.conv_options())
        layers[name] = entry
    return {
        "format": CSR_FORMAT,
        "model": dict(model) if model is not None else None,
        "plan": dict(plan) if plan is not None else None,
        "preprocessing": dict(preprocessing) if preprocessing is not None else None,
        "source": source,
        "density_threshold": conversion.density_threshold,
        "csr_layers": layers,
    }


def save_csr_model(conversion: CSRConversion, path: Path, header: Mapping[str, Any]) -> int:
    """Write `conversion.model` to `path` (atomically) with `header`; returns the file size in bytes."""
    tensors: dict[str, torch.Tensor] = {}
    sparse = _sparse_layers(conversion.model)
    for name, module in sparse.items():
        weight = module.weight
        for part, tensor in zip(PARTS, (weight.crow_indices(), weight.col_indices(), weight.values())):
            tensors[f"{_prefix(name)}weight.{part}"] = tensor
    sparse_keys = {f"{_prefix(name)}weight" for name in sparse}
    for key, value in conversion.model.state_dict().items():
        if key in sparse_keys:
            continue
        if value.layout != torch.strided:
            raise UsageError(f"cannot store {key!r}: layout {value.layout} outside a CSR layer")
        if key in tensors:
            raise UsageError(f"tensor name {key!r} collides with a CSR part name")
        tensors[key] = value
    save_tensors(path, tensors, metadata={HEADER_KEY: json.dumps(dict(header))})
    return path.stat().st_size


@dataclass
class CSRFile:
    """A loaded CSR model file: the runnable model (eval mode) and the file's header."""

    model: nn.Module
    header: dict[str, Any]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise RunDirError(f"CSR model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunDirError(f"CSR model file {path} is not a valid safetensors file: {error}") from None
    try:
        header = json.loads(metadata[HEADER_KEY])
    except (KeyError, json.JSONDecodeError):
        raise RunDirError(f"{path} has no secateurs CSR header; it was not written by 'export --format csr'") from None
    if not isinstance(header, dict) or header.get("format") != CSR_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise RunDirError(f"{path}: expected format {CSR_FORMAT!r}, found {found!r}")
    return header, tensors


def _skeleton(path: Path, header: dict[str, Any], model_factory: Callable[[], nn.Module] | None) -> nn.Module:
    spec = header.get("model")
    if model_factory is not None:
        model = model_factory()
    elif isinstance(spec, dict) and {"name", "input_shape", "num_classes"} <= set(spec):
        try:
            model = rebuild_model(ModelSpec.model_validate(spec)).module  # a zoo model or an external reference
        except ValidationError as error:
            raise RunDirError(f"{path}: the header's model is malformed: {format_validation_error(error)}") from None
        except UsageError as error:
            raise RunDirError(f"{path}: cannot rebuild its model: {error}") from None
    else:
        raise RunDirError(f"{path}: the header names no registry model; pass model_factory to rebuild it")
    if header.get("plan") is not None:
        if not isinstance(spec, dict) or "input_shape" not in spec:
            raise RunDirError(f"{path}: a plan needs the model's input_shape in the header")
        model = replay_plan(model, header["plan"], torch.zeros(1, *spec["input_shape"]))
    return model


def _csr_weight(path: Path, name: str, tensors: dict[str, torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    keys = [f"{_prefix(name)}weight.{part}" for part in PARTS]
    missing = [key for key in keys if key not in tensors]
    if missing:
        raise RunDirError(f"{path}: CSR layer {name!r} lacks {', '.join(missing)}")
    crow, col, values = (tensors.pop(key) for key in keys)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR tensor support is in beta state"
            return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=True)
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise RunDirError(f"{path}: CSR layer {name!r} is malformed: {first_line}") from None


def _csr_module(path: Path, name: str, layer: nn.Module, entry: Any, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The CSR module replacing the skeleton's `layer`, its shapes checked against the header."""
    if not isinstance(entry, dict) or "shape" not in entry:
        raise RunDirError(f"{path}: header entry of CSR layer {name!r} lacks its shape")
    shape = tuple(int(size) for size in entry["shape"])
    bias = getattr(layer, "bias", None)
    placeholder = None if bias is None else torch.zeros_like(bias)
    if isinstance(layer, nn.Linear) and entry.get("kind") == "linear":
        if shape != (layer.out_features, layer.in_features):
            raise RunDirError(
                f"{path}: CSR layer {name!r} has shape {shape}, the model's Linear {tuple(layer.weight.shape)}"
            )
        return CSRLinear(_csr_weight(path, name, tensors, (shape[0], shape[1])), placeholder)
    if isinstance(layer, nn.Conv2d) and entry.get("kind") == "conv2d":
        try:
            geometry = conv_geometry(layer)
        except UsageError as error:
            raise RunDirError(f"{path}: CSR layer {name!r}: {error}") from None
        expected = (layer.out_channels, int(layer.weight[0].numel()))
        if shape != expected:
            raise RunDirError(f"{path}: CSR layer {name!r} has shape {shape}, the model's Conv2d needs {expected}")
        found = {key: list(value) if isinstance(value, tuple) else value for key, value in geometry.items()}
        stored = {key: entry.get(key) for key in found}
        if stored != found:
            raise RunDirError(f"{path}: CSR layer {name!r} geometry {stored} differs from the model's {found}")
        return CSRConv2d(_csr_weight(path, name, tensors, (shape[0], shape[1])), placeholder, **geometry)
    raise RunDirError(
        f"{path}: CSR layer {name!r} is a {entry.get('kind')!r} in the file but a {type(layer).__name__} in the model"
    )


def load_csr_model(path: Path, model_factory: Callable[[], nn.Module] | None = None) -> CSRFile:
    """Rebuild the CSR model stored at `path` (see the module docstring); returns it in eval mode.

    `model_factory` builds the unpruned architecture (default: the registry model named in the
    header). Anything missing, malformed or mismatched is a `RunDirError` naming the file and tensor.
    """
    path = Path(path)
    header, tensors = _read(path)
    model = _skeleton(path, header, model_factory)
    layers = header.get("csr_layers")
    if not isinstance(layers, dict):
        raise RunDirError(f"{path}: header 'csr_layers' must be an object")
    for name, entry in layers.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise RunDirError(f"{path}: CSR layer {name!r} does not exist in the model") from None
        replacement = _csr_module(path, name, layer, entry, tensors)
        if name:
            model.set_submodule(name, replacement)
        else:
            model = replacement
    own = {key: value for key, value in model.state_dict().items() if value.layout == torch.strided}
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        detail = "; ".join(
            f"{label} {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise RunDirError(f"{path} does not match the model: {detail}")
    for key, value in own.items():
        if tuple(value.shape) != tuple(tensors[key].shape):
            raise RunDirError(
                f"{path} does not match the model: {key} has shape {tuple(tensors[key].shape)}, "
                f"the model expects {tuple(value.shape)}"
            )
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(tensors[key])
    model.eval()
    return CSRFile(model=model, header=header)
