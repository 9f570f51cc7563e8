"""``oracle``: the true increase of the calibration loss when one unit alone is removed.

For every unit u of every prunable group (a channel, or the channels a grouped convolution ties)

    S_u = L(w with u removed) − L(w)

where L is the size-weighted mean loss over the calibration batches with the model in eval mode
(batch norm on its running statistics) and "removed" is the masked form of the physical removal
(`ChannelContext.removed`: the unit's output rows *and every consumer's input slice* zeroed), so in
eval mode it is exactly the loss of the physically pruned model (tests compare the two). It costs one
forward pass over the calibration set per unit, plus one for L(w): the reference that says how good
any criterion can be at one-shot ranking (sets of units interact, which no per-unit score sees).
Higher = more important; negative scores (the removal helps) are kept as measured.

``oracle_cache`` (a directory, off by default) memoises the scores under a hash of the weights, the
data and the loss, so the allocations and targets of one dense model measure them once. The work
happens on an eval-mode copy whose weights are restored bit for bit after each unit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from secateurs.io.files import atomic_write_json, exclusive_lock, load_tensors, read_json, save_tensors
from secateurs.scoring.base import LossFn
from secateurs.scoring.channel_criteria.base import ChannelContext, ChannelScores, register_channel_scorer
from secateurs.structure.groups import ChannelGroup


class OracleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    oracle_cache: str | None = None
    """Directory memoising the scores (content-hashed); None: off."""


def calibration_loss(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn) -> float:
    """The size-weighted mean of ``loss_fn`` over ``batches`` without gradients, as a Python float."""
    total = sum(len(targets) for _, targets in batches)
    loss = 0.0
    with torch.no_grad():
        for inputs, targets in batches:
            loss += float(loss_fn(model(inputs), targets).double()) * (len(targets) / total)
    return loss


def oracle_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
) -> tuple[list[torch.Tensor], dict[str, float | int]]:
    """Per-channel loss increases (tied channels share their unit's value) and the cost record.

    ``groups`` are channel groups of ``model``, whose weights must be plain parameters (masks baked
    in, as the structured pipeline hands them over). The model runs in eval mode and its weights are
    restored exactly after each unit; its training flags are restored at the end.
    """
    started = time.perf_counter()
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        base = calibration_loss(model, batches, loss_fn)
        forwards = 1
        scores: list[torch.Tensor] = []
        for group in groups:
            per_unit = torch.zeros(group.unit_count, dtype=torch.float64)  # host-side: one number per unit
            for unit in range(group.unit_count):
                with ChannelContext.removed(group, group.units != unit):
                    per_unit[unit] = calibration_loss(model, batches, loss_fn) - base
                forwards += 1
            scores.append(per_unit[group.units.cpu()])
    finally:
        for module, training in flags.items():
            module.training = training
    seconds = time.perf_counter() - started
    return scores, {"base_loss": base, "forwards": forwards, "oracle_seconds": seconds}


def _cache_key(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: object) -> str:
    digest = hashlib.sha256(b"oracle-channel/1")
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for inputs, targets in batches:
        digest.update(inputs.detach().cpu().contiguous().numpy().tobytes())
        digest.update(targets.detach().cpu().contiguous().numpy().tobytes())
    digest.update(getattr(loss_fn, "__qualname__", repr(loss_fn)).encode())
    return digest.hexdigest()[:32]


@register_channel_scorer(
    "oracle",
    description="exact calibration-loss increase of removing each channel alone (one forward per channel)",
    needs_data=True,
    options=OracleOptions,
)
def oracle_channel_scores(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[OracleOptions]
) -> ChannelScores:
    batches = context.require_batches("oracle")
    directory = context.options.oracle_cache
    if directory is None:
        scores, record = oracle_scores(model, groups, batches, context.loss_fn)
        return ChannelScores(scores, {**record, "oracle_cache": "off"})
    path = Path(directory) / f"{_cache_key(model, batches, context.loss_fn)}.safetensors"
    meta = path.with_suffix(".json")
    roots = [group.root for group in groups]
    with exclusive_lock(path.with_suffix(".lock")):  # a parallel cell waits, then hits
        if path.is_file() and meta.is_file():
            tensors = load_tensors(path, "oracle cache")
            if all(root in tensors for root in roots):
                record = read_json(meta, "oracle cache record")
                return ChannelScores([tensors[root] for root in roots], {**record, "oracle_cache": "hit"})
        scores, record = oracle_scores(model, groups, batches, context.loss_fn)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, dict(zip(roots, scores, strict=True)))
        atomic_write_json(meta, record)
        return ChannelScores(scores, {**record, "oracle_cache": "miss"})
