"""``packed`` export: structured-sparse weights as values plus fixed-length indices or bitmasks.

``secateurs export RUN --format packed`` writes a directory with ``weights.safetensors`` (the packed
tensors) and ``header.json`` (how to unpack each weight), then reads both back, unpacks them and
checks that every weight is reproduced bit for bit (kept entries identical as int bit patterns,
removed entries +0.0) before it reports success. `unpack` / `read_packed` are the inverse.

Encodings (for each masked weight every applicable one is sized and the smallest is written):

- ``window_kernel`` (conv weights whose filters all keep the same number K_k of kernels and whose
  surviving kernels all keep the same number K_w of taps: the ``window``, ``kernel`` and
  ``window+kernel`` granularities): values ``O × K_k × K_w``; the kept input channels of every filter
  (``O × K_k``, uint8/int16/int32 by C_in; omitted when K_k = C_in); the kept taps of every surviving
  kernel, either as index lists (``O × K_k × K_w``, uint8) or as a packed bitmask of k² bits per kernel,
  whichever is smaller (omitted when K_w = k²).
- ``n_of_m`` (every group of M consecutive weights along (kh, kw, C_in) keeps N): values ``groups × N``
  and positions ``groups × N`` (uint8) or a packed bitmask of M bits per group, whichever is smaller.
- ``filter`` (whole rows kept or removed): the kept row indices (int32) and the kept rows.
- ``bitmask`` (anything else, e.g. unstructured): one packed bit per entry and the kept values in
  row-major order.
- ``dense``: tensors without a mask (biases, BatchNorm, layers left dense), stored as they are.

Byte counts are payload bytes (tensor data; the JSON header and safetensors' own header are
reported separately as ``file_bytes``). The references: ``dense`` = every tensor at its dtype's size;
``csr`` = every masked tensor as CSR over ``shape[0]`` rows (values, int32 column indices, int32 row
pointers), everything else dense.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from secateurs.deploy.exporters import ExportOptions, register_exporter
from secateurs.errors import RunDirError
from secateurs.io.files import (
    FILE_MODE,
    atomic_write_json,
    load_tensors,
    read_json,
    replace_dir,
    save_tensors,
    staging_dir,
)
from secateurs.runs.directory import LoadedRun
from secateurs.sparsity.granularities_structured import from_reduction_groups, reduction_groups
from secateurs.sparsity.masks import plain_state_dict

FORMAT = "secateurs-packed"
VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
HEADER_FILE = "header.json"
GROUP_SIZES = (2, 3, 4, 6, 8, 9, 16)
"""M values tried for the ``n_of_m`` encoding."""

Packed = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""Parts (name → tensor) and the JSON description of one packed weight."""


# ------------------------------------------------------------------------------------- bit helpers
def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Boolean tensor → uint8 bytes, 8 entries per byte, most significant bit first (zero padded)."""
    flat = bits.reshape(-1).to(torch.uint8)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8)).reshape(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (padded * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the first ``count`` bits as a boolean vector."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:count].bool()


def index_dtype(limit: int) -> torch.dtype:
    """The smallest integer dtype holding indices ``0 … limit − 1``."""
    if limit <= 256:
        return torch.uint8
    if limit <= 2**15:
        return torch.int16
    return torch.int32


def kept_positions(mask_rows: torch.Tensor, keep: int) -> torch.Tensor:
    """Ascending positions of the ``keep`` True entries of every row of a boolean matrix."""
    positions = torch.arange(mask_rows.shape[1]).expand(mask_rows.shape)
    order = torch.argsort((~mask_rows).to(torch.int8), dim=1, stable=True)[:, :keep]
    return positions.gather(1, order)


def _payload(parts: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def _positions_or_bitmask(rows: torch.Tensor, keep: int) -> dict[str, torch.Tensor]:
    """The cheaper of index lists (uint8/…) and a packed bitmask for rows that each keep ``keep``."""
    indices = kept_positions(rows, keep).to(index_dtype(rows.shape[1]))
    bitmask = pack_bits(rows)
    return {"positions": indices} if _payload({"p": indices}) <= bitmask.numel() else {"bitmask": bitmask}


# ------------------------------------------------------------------------------------------ packers
def _window_kernel(weight: torch.Tensor, mask: torch.Tensor) -> Packed | None:
    if weight.dim() != 4:
        return None
    out, inputs, height, width = weight.shape
    taps = height * width
    per_kernel = mask.reshape(out, inputs, taps).sum(dim=2)
    alive = per_kernel > 0
    kernels = alive.sum(dim=1)
    if not bool((kernels == kernels[0]).all()) or int(kernels[0]) == 0:
        return None
    kept_taps = per_kernel[alive]
    if not bool((kept_taps == kept_taps[0]).all()):
        return None
    keep_kernels, keep_taps = int(kernels[0]), int(kept_taps[0])
    parts: dict[str, torch.Tensor] = {}
    channels = kept_positions(alive, keep_kernels)
    if keep_kernels < inputs:
        parts["kernels"] = channels.to(index_dtype(inputs))
    windows = mask.reshape(out, inputs, taps).gather(1, channels[:, :, None].expand(out, keep_kernels, taps))
    values = weight.reshape(out, inputs, taps).gather(1, channels[:, :, None].expand(out, keep_kernels, taps))
    rows = windows.reshape(-1, taps)
    if keep_taps < taps:
        parts.update(_positions_or_bitmask(rows, keep_taps))
    tap_index = kept_positions(rows, keep_taps)
    parts["values"] = values.reshape(-1, taps).gather(1, tap_index).reshape(out, keep_kernels, keep_taps).clone()
    return parts, {"encoding": "window_kernel", "kernels_kept": keep_kernels, "taps_kept": keep_taps}


def _n_of_m(weight: torch.Tensor, mask: torch.Tensor, m: int) -> Packed | None:
    if weight.dim() not in (2, 4) or (weight.numel() // weight.shape[0]) % m:
        return None
    groups = reduction_groups(mask, m)
    counts = groups.sum(dim=1)
    n = int(counts[0])
    if n == 0 or not bool((counts == n).all()):
        return None
    parts = _positions_or_bitmask(groups, n)
    parts["values"] = reduction_groups(weight, m).gather(1, kept_positions(groups, n)).clone()
    return parts, {"encoding": "n_of_m", "n": n, "m": m}


def _filter(weight: torch.Tensor, mask: torch.Tensor) -> Packed | None:
    rows = mask.reshape(mask.shape[0], -1)
    full, empty = rows.all(dim=1), ~rows.any(dim=1)
    if not bool((full | empty).all()):
        return None
    kept = torch.nonzero(full).reshape(-1).to(torch.int32)
    return {"rows": kept, "values": weight[kept.long()].clone()}, {"encoding": "filter"}


def _bitmask(weight: torch.Tensor, mask: torch.Tensor) -> Packed:
    return {"bitmask": pack_bits(mask), "values": weight[mask].clone()}, {"encoding": "bitmask"}


def pack(weight: torch.Tensor, mask: torch.Tensor | None) -> Packed:
    """Pack one tensor: the smallest applicable encoding (``dense`` when there is no mask)."""
    weight = weight.detach().cpu().contiguous()
    description: dict[str, Any] = {"shape": list(weight.shape), "dtype": str(weight.dtype).removeprefix("torch.")}
    if mask is None:
        return {"values": weight.clone()}, {**description, "encoding": "dense"}
    mask = mask.detach().cpu().bool()
    if tuple(mask.shape) != tuple(weight.shape):
        raise RunDirError(f"mask of shape {tuple(mask.shape)} does not match its weight {tuple(weight.shape)}")
    candidates = [_window_kernel(weight, mask), _filter(weight, mask)]
    candidates += [_n_of_m(weight, mask, m) for m in GROUP_SIZES]
    candidates.append(_bitmask(weight, mask))
    parts, chosen = min((c for c in candidates if c is not None), key=lambda c: _payload(c[0]))
    return parts, {**description, **chosen}


# ---------------------------------------------------------------------------------------- unpacking
def unpack(
    parts: Mapping[str, torch.Tensor], description: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverse of `pack`: the weight (removed entries +0.0) and its boolean mask (None for ``dense``)."""
    shape = torch.Size(description["shape"])
    encoding = description["encoding"]
    values = parts["values"]
    if encoding == "dense":
        return values.clone(), None
    if encoding == "bitmask":
        mask = unpack_bits(parts["bitmask"], shape.numel()).reshape(shape)
        weight = torch.zeros(shape, dtype=values.dtype)
        weight[mask] = values
        return weight, mask
    if encoding == "filter":
        weight = torch.zeros(shape, dtype=values.dtype)
        weight[parts["rows"].long()] = values
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[parts["rows"].long()] = True
        return weight, mask
    if encoding == "n_of_m":
        n, m = int(description["n"]), int(description["m"])
        groups = shape.numel() // m
        positions = _positions(parts, groups, m, n)
        grouped = torch.zeros(groups, m, dtype=values.dtype).scatter_(1, positions, values)
        kept = torch.zeros(groups, m, dtype=torch.bool).scatter_(1, positions, True)
        return from_reduction_groups(grouped, shape), from_reduction_groups(kept, shape)
    if encoding == "window_kernel":
        out, inputs, height, width = shape
        taps = height * width
        keep_kernels, keep_taps = int(description["kernels_kept"]), int(description["taps_kept"])
        channels = parts["kernels"].long() if "kernels" in parts else torch.arange(inputs).expand(out, inputs)
        positions = _positions(parts, out * keep_kernels, taps, keep_taps)
        windows = torch.zeros(out * keep_kernels, taps, dtype=values.dtype)
        windows.scatter_(1, positions, values.reshape(-1, keep_taps))
        kept_windows = torch.zeros(out * keep_kernels, taps, dtype=torch.bool).scatter_(1, positions, True)
        index = channels[:, :, None].expand(out, keep_kernels, taps)
        weight = torch.zeros(out, inputs, taps, dtype=values.dtype)
        weight.scatter_(1, index, windows.reshape(out, keep_kernels, taps))
        mask = torch.zeros(out, inputs, taps, dtype=torch.bool)
        mask.scatter_(1, index, kept_windows.reshape(out, keep_kernels, taps))
        return weight.reshape(shape), mask.reshape(shape)
    raise RunDirError(f"unknown packed encoding {encoding!r}; accepted: dense, bitmask, filter, n_of_m, window_kernel")


def _positions(parts: Mapping[str, torch.Tensor], rows: int, size: int, keep: int) -> torch.Tensor:
    if "positions" in parts:
        return parts["positions"].long().reshape(rows, keep)
    if "bitmask" in parts:
        bits = unpack_bits(parts["bitmask"], rows * size).reshape(rows, size)
        return kept_positions(bits, keep)
    return torch.arange(size).expand(rows, size)


# ------------------------------------------------------------------------------------ sizes and I/O
def csr_bytes(weight: torch.Tensor, mask: torch.Tensor) -> int:
    """CSR size over ``shape[0]`` rows: values, int32 column indices, int32 row pointers."""
    nonzero = int(mask.sum())
    return nonzero * (weight.element_size() + 4) + (weight.shape[0] + 1) * 4


def pack_state(
    state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pack a plain state dict: flat safetensors parts (``name/part``) and the per-tensor header."""
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise RunDirError(f"masks for {', '.join(unknown)} have no weight in the state dict")
    tensors: dict[str, torch.Tensor] = {}
    header: dict[str, Any] = {}
    for name, weight in state.items():
        parts, description = pack(weight, masks.get(name))
        description["parts"] = {}
        for part, tensor in parts.items():
            key = f"{name}/{part}"
            tensors[key] = tensor.contiguous()
            description["parts"][part] = key
        description["packed_bytes"] = _payload(parts)
        description["dense_bytes"] = weight.numel() * weight.element_size()
        description["csr_bytes"] = csr_bytes(weight, masks[name]) if name in masks else description["dense_bytes"]
        header[name] = description
    return tensors, header


def unpack_state(
    tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Inverse of `pack_state`: the plain state dict and the masks."""
    state: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for name, description in header.items():
        try:
            parts = {part: tensors[key] for part, key in description["parts"].items()}
        except KeyError as error:
            raise RunDirError(f"packed weights lack the part {error} of {name}") from None
        weight, mask = unpack(parts, description)
        state[name] = weight
        if mask is not None:
            masks[name] = mask
    return state, masks


def totals(header: Mapping[str, Any]) -> dict[str, Any]:
    """Summed byte counts of a packed header and the ratios against dense and CSR."""
    dense = sum(int(d["dense_bytes"]) for d in header.values())
    csr = sum(int(d["csr_bytes"]) for d in header.values())
    packed = sum(int(d["packed_bytes"]) for d in header.values())
    return {
        "dense_bytes": dense,
        "csr_bytes": csr,
        "packed_bytes": packed,
        "packed_vs_dense": packed / dense if dense else math.nan,
        "packed_vs_csr": packed / csr if csr else math.nan,
    }


def storage_report(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Per-tensor encodings and byte counts, and their ``total`` (nothing is written)."""
    _, header = pack_state(state, masks)
    layers = {
        name: {k: d[k] for k in ("encoding", "packed_bytes", "dense_bytes", "csr_bytes")}
        for name, d in header.items()
        if d["encoding"] != "dense"
    }
    return {"layers": layers, "total": totals(header)}


def read_packed(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a packed export directory: ``(state dict, masks, header)``."""
    document = read_json(Path(path) / HEADER_FILE, "packed header")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RunDirError(f"{path} is not a {FORMAT} export (its {HEADER_FILE} has no format {FORMAT!r})")
    tensors = load_tensors(Path(path) / WEIGHTS_FILE, "packed weights")
    state, masks = unpack_state(tensors, document["tensors"])
    return state, masks, document


def bit_identical(reference: torch.Tensor, unpacked: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Kept entries identical bit for bit and removed entries +0.0 (dtype and shape equal too)."""
    if reference.dtype != unpacked.dtype or reference.shape != unpacked.shape:
        return False
    expected = reference if mask is None else torch.where(mask, reference, torch.zeros((), dtype=reference.dtype))
    if not expected.is_floating_point():
        return torch.equal(expected, unpacked)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[expected.element_size()]
    return torch.equal(expected.contiguous().view(bits), unpacked.contiguous().view(bits))


@register_exporter("packed", description="window/kernel/N:M weights as values + fixed-length indices", suffix=".packed")
def export_packed(run: LoadedRun, out: Path, options: ExportOptions) -> dict[str, Any]:
    """Write ``out/`` (weights.safetensors + header.json), read it back and verify it bit for bit."""
    state = plain_state_dict(run.model)
    masks = run.masks.state_dict() if run.masks is not None else {}
    tensors, header = pack_state(state, masks)
    summary = totals(header)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(run.path),
        "model": run.record.model.to_json(),
        "preprocessing": run.record.preprocessing.to_json(),
        "plan": run.plan is not None,
        "bytes": summary,
        "tensors": header,
    }
    with staging_dir(out) as staging:
        save_tensors(staging / WEIGHTS_FILE, tensors)
        atomic_write_json(staging / HEADER_FILE, document)
        unpacked, unpacked_masks, _ = read_packed(staging)
        for name, reference in state.items():
            if not bit_identical(reference, unpacked[name], masks.get(name)):
                raise RuntimeError(f"packed export of {name} does not reproduce the weights; nothing written")
            if name in masks and not torch.equal(unpacked_masks[name], masks[name].bool()):
                raise RuntimeError(f"packed export of {name} does not reproduce its mask; nothing written")
        file_bytes = sum(f.stat().st_size for f in staging.iterdir())
        os.chmod(staging, FILE_MODE | (FILE_MODE & 0o444) >> 2)  # mkdtemp's 0o700 → the umask's directory mode
        replace_dir(staging, out)
    encodings: dict[str, int] = {}
    for description in header.values():
        encodings[description["encoding"]] = encodings.get(description["encoding"], 0) + 1
    return {**summary, "file_bytes": file_bytes, "encodings": encodings, "verified": "bit-identical"}
