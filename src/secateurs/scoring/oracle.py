"""The oracle channel criterion: the true increase of the calibration loss when one unit alone is removed.

For every unit u of every prunable group (a channel, or the channels a grouped convolution ties)
the score is

    S_u = L(w with u removed) − L(w)

where L is the mean loss over the calibration batches with the model in eval mode (batch norm on its
running statistics), and "removed" is the masked form of the physical removal
(`structure.surgery.removal_masks`): the unit's output filters *and every consumer's input slice* are
zeroed, so in eval mode the masked model computes exactly what the physically pruned one does. It
costs one forward pass over the calibration set per unit (plus one for L(w)), and it is exact for
removing one unit at a time — the reference that says how good any criterion can be at one-shot
ranking (pairs and larger sets interact, which no per-unit score sees).

Higher = more important (a removal that raises the loss more is worse). Negative scores (removal
helps) are kept as measured. The model is not modified: the work happens on an eval-mode copy whose
weights are restored bit for bit after each unit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.scoring.base import LossFn
from secateurs.scoring.hessian import prepared_copy
from secateurs.structure.groups import ChannelGroup, member_slices


@dataclass(frozen=True)
class OracleScores:
    """One loss increase per channel of each group (tied channels share their unit's value)."""

    scores: list[torch.Tensor]
    base_loss: float
    forwards: int
    seconds: float


def calibration_loss(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn) -> float:
    """The size-weighted mean of ``loss_fn`` over ``batches`` (no gradient), in float64."""
    total = sum(len(targets) for _, targets in batches)
    loss = 0.0
    with torch.no_grad():
        for inputs, targets in batches:
            loss += float(loss_fn(model(inputs), targets).double()) * (len(targets) / total)
    return loss


def _entries(group: ChannelGroup, weights: dict[str, torch.Tensor]) -> list[list[tuple[str, torch.Tensor]]]:
    """Per unit: (layer name, flat indices into its weight) of every entry its removal zeroes."""
    positions = {
        name: torch.arange(weight.numel(), device=weight.device).view_as(weight) for name, weight in weights.items()
    }
    per_unit: list[list[tuple[str, torch.Tensor]]] = [[] for _ in range(group.unit_count)]
    for member, rows in member_slices(group, positions, roles=("out", "in"), kinds=("filter",)):
        units = group.units[member.channels.to(group.units.device)].tolist()
        for row, unit in zip(rows, units, strict=True):
            per_unit[unit].append((member.name, row.reshape(-1)))
    return per_unit


def oracle_channel_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
) -> OracleScores:
    """Loss increase of removing each unit alone, for every channel of ``groups`` (model untouched).

    ``groups`` must come from a channel graph of ``model`` (their members are read by layer name on
    an eval-mode copy). Returns the per-channel scores, the unpruned calibration loss, the number of
    forward passes over the calibration set, and the seconds spent.
    """
    started = time.perf_counter()
    work = prepared_copy(model)
    names = sorted({member.name for group in groups for member in group.members if member.kind == "filter"})
    weights: dict[str, torch.Tensor] = {}
    for name in names:
        weight = getattr(work.get_submodule(name), "weight", None)
        if not isinstance(weight, torch.Tensor) or type(work.get_submodule(name)) not in (nn.Conv2d, nn.Linear):
            kind = type(work.get_submodule(name)).__name__
            raise StructureError(f"oracle-channel: layer {name!r} ({kind}) cannot be masked channel by channel")
        weights[name] = weight
    base = calibration_loss(work, batches, loss_fn)
    forwards = 1
    scores: list[torch.Tensor] = []
    with torch.no_grad():
        for group in groups:
            unit_scores = torch.zeros(group.unit_count, dtype=torch.float64)  # host: one number per unit
            for unit, entries in enumerate(_entries(group, weights)):
                saved = [
                    (weights[name].view(-1), index, weights[name].view(-1)[index].clone()) for name, index in entries
                ]
                for flat, index, _ in saved:
                    flat[index] = 0.0
                unit_scores[unit] = calibration_loss(work, batches, loss_fn) - base
                forwards += 1
                for flat, index, original in saved:
                    flat[index] = original
            scores.append(unit_scores[group.units.cpu()])
    return OracleScores(scores, base, forwards, time.perf_counter() - started)
