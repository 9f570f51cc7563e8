"""A content-addressed cache of Hutchinson channel traces (HAP's ``trace_cache`` option).

Several prunings of one dense model (ratios, implant shares, ablations) need the same trace
estimates. `cached_traces` memoises them in a directory under a hash of the weights, the data, the
probe settings, the loss and the generator state, as safetensors + a JSON record; on a hit it also
restores the generator to the state the estimate left it in, so later draws are what they would have
been. The caller records whether it hit (``"hit"``, ``"miss"``, ``"off"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from secateurs.io.files import atomic_write_json, exclusive_lock, load_tensors, read_json, save_tensors
from secateurs.scoring.base import LossFn
from secateurs.scoring.hessian import ChannelTraces, HutchinsonConfig, hutchinson_channel_traces


def cached_traces(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    generator: torch.Generator,
    config: HutchinsonConfig,
    directory: str | None,
) -> tuple[ChannelTraces, str]:
    """Hutchinson traces (`hutchinson_channel_traces`), memoised in ``directory`` when it is set.

    Returns the traces and ``"off"``, ``"hit"`` or ``"miss"``; advances ``generator`` as the
    estimate does (on a hit: to the cached state). Writes the cache files on a miss, under a file lock
    so that parallel cells of a suite compute each estimate once.
    """
    if directory is None:
        return hutchinson_channel_traces(model, batches, loss_fn, generator, config), "off"
    key = cache_key(model, batches, config, generator, loss_fn)
    path = Path(directory) / f"{key}.safetensors"
    meta = path.with_suffix(".json")
    with exclusive_lock(path.with_suffix(".lock")):  # a parallel cell waits, then hits
        if path.is_file() and meta.is_file():
            tensors = load_tensors(path, "trace cache")
            record = read_json(meta, "trace cache record")
            generator.set_state(tensors.pop("__generator__").to(torch.uint8))
            traces = {k.removeprefix("trace:"): v for k, v in tensors.items() if k.startswith("trace:")}
            errors = {k.removeprefix("error:"): v for k, v in tensors.items() if k.startswith("error:")}
            cached = ChannelTraces(
                traces,
                errors,
                record["probes"],
                record["seconds"],
                record["hvp_seconds"],
                record["changes"],
                engine=record.get("engine", "double-backward"),
                engine_reason=record.get("engine_reason", ""),
                probe_seed=config.probe_seed,
            )
            return cached, "hit"
        result = hutchinson_channel_traces(model, batches, loss_fn, generator, config)
        Path(directory).mkdir(parents=True, exist_ok=True)
        tensors = {f"trace:{k}": v for k, v in result.traces.items()}
        tensors.update({f"error:{k}": v for k, v in result.standard_errors.items()})
        tensors["__generator__"] = generator.get_state()
        save_tensors(path, tensors)
        atomic_write_json(
            meta,
            {
                "probes": result.probes,
                "seconds": result.seconds,
                "hvp_seconds": result.hvp_seconds,
                "changes": result.changes,
                "engine": result.engine,
                "engine_reason": result.engine_reason,
            },
        )
        return result, "miss"


def cache_key(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: HutchinsonConfig,
    generator: torch.Generator,
    loss_fn: object,
) -> str:
    """The content hash naming a cache entry (weights, data, probe settings, loss, generator state)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for inputs, targets in batches:
        digest.update(inputs.detach().cpu().contiguous().numpy().tobytes())
        digest.update(targets.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(config).encode())
    digest.update(getattr(loss_fn, "__qualname__", repr(loss_fn)).encode())
    digest.update(generator.get_state().numpy().tobytes())
    return digest.hexdigest()[:32]
