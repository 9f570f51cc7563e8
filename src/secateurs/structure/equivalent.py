"""The masked equivalent of a structured plan: the unpruned model with masks instead of surgery.

A plan (`structure.plan`) removes channels physically. `masked_equivalent` builds its twin on the
model the plan was made from: a copy in which the removed channels' filters and every consumer's
input slice are masked to zero (`structure.surgery.keep_masks`), and implanted filters are
`ImplantedConv2d` layers in the original channel numbering. In eval mode the twin computes what the
physically pruned model computes (tests compare them to float precision), while keeping the original
layout: weights can be compared entry by entry with the dense model, and masked training of the twin
keeps the removed channels at zero.

The model is found by layer *names* and the channel handlers (`secateurs.layers`, looked up along
each layer's class hierarchy), never by exact type: subclasses of ``nn.Linear``/``nn.Conv2d`` (timm's
``Linear``, ...) are handled like their bases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.sparsity.masks import MaskStore, baked_copy
from secateurs.structure.groups import ChannelGroup, Member, channel_graph
from secateurs.structure.implant import ImplantedConv2d
from secateurs.structure.plan import ImplantStep, Plan, PlanStep, RemoveStep, parse_plan, plan_of, replace_module
from secateurs.structure.surgery import keep_masks

Masks = dict[str, torch.Tensor]
"""Per group root: a boolean mask over the group's channels (True = keep)."""


def new_steps(model: nn.Module, plan: Plan | Mapping[str, Any]) -> list[PlanStep]:
    """The steps of ``plan`` that ``model`` has not had yet (a plan that starts with `plan_of(model)`
    — the plan of pruning an already pruned model — without that prefix)."""
    steps = list(parse_plan(dict(plan) if isinstance(plan, Mapping) else plan).steps)
    previous = plan_of(model)
    if previous and steps[: len(previous)] == previous:
        return steps[len(previous) :]
    return steps


def masked_equivalent(model: nn.Module, plan: Plan | Mapping[str, Any], example_inputs: torch.Tensor) -> nn.Module:
    """The masked twin of ``plan`` applied to ``model``: a new model (masks as parametrizations, eval mode).

    ``model`` is the model the plan was made from (not changed: the twin is a copy with any masks of
    ``model`` multiplied in); ``plan`` a `Plan` or its plan.json object; ``example_inputs`` a batch
    to trace the model with (only its shape matters). Removal steps become keep-masks; implant steps
    become `ImplantedConv2d` layers on the unpruned convolutions (their implanted slots renumbered to
    the original channels), whose removed slots are masked too. A plan that does not fit the model
    (an unknown group root, a channel count that differs, a removal after an implant) is a
    `StructureError` naming the step.
    """
    steps = new_steps(model, plan)
    twin = baked_copy(model).eval()  # traced in eval mode: running statistics stay as they are
    graph = channel_graph(twin, example_inputs)
    kept = _kept_masks(graph.groups, [step for step in steps if isinstance(step, RemoveStep)], steps)
    implants = [step for step in steps if isinstance(step, ImplantStep)]
    if implants:
        by_layer = _filters_by_layer(graph.groups)
        for step in implants:
            _implant_unpruned(twin, step, by_layer, kept)
        graph = channel_graph(twin, example_inputs)
        kept = _carried_over(kept, graph.groups)
    store = MaskStore.attached(twin)
    store.update_(keep_masks(graph.groups, kept))
    return twin


def _kept_masks(groups: Sequence[ChannelGroup], removals: Sequence[RemoveStep], steps: Sequence[PlanStep]) -> Masks:
    """Per group root, which of its original channels the removal steps keep (steps compose in order)."""
    first_implant = next((i for i, step in enumerate(steps) if isinstance(step, ImplantStep)), len(steps))
    if any(isinstance(step, RemoveStep) for step in steps[first_implant:]):
        raise StructureError("the plan removes channels after an implant; its masked equivalent is not defined")
    by_root = {group.root: group for group in groups}
    kept: Masks = {}
    for index, step in enumerate(removals):
        group = by_root.get(step.root)
        if group is None:
            raise StructureError(
                f"plan step {index}: {step.root!r} is not the root of a channel group of this model "
                f"(roots: {', '.join(sorted(by_root)[:6])}{', …' if len(by_root) > 6 else ''})"
            )
        mask = kept.setdefault(step.root, torch.ones(group.channels, dtype=torch.bool))
        alive = torch.nonzero(mask).reshape(-1)
        if step.channels != len(alive):
            raise StructureError(
                f"plan step {index}: group {step.root!r} has {len(alive)} channels at this step, the plan expects "
                f"{step.channels}"
            )
        mask[alive[torch.tensor(step.removed, dtype=torch.long)]] = False
    return kept


def _filters_by_layer(groups: Sequence[ChannelGroup]) -> dict[str, tuple[ChannelGroup, Member]]:
    """Each filter layer's group and member (the layer's output channels in the group's numbering)."""
    return {member.name: (group, member) for group in groups for member in group.out_filters()}


def _implant_unpruned(
    twin: nn.Module, step: ImplantStep, by_layer: Mapping[str, tuple[ChannelGroup, Member]], kept: Masks
) -> None:
    """Replace ``step.layer`` of ``twin`` by an `ImplantedConv2d` whose slots are in the original numbering."""
    found = by_layer.get(step.layer)
    if found is None:
        raise StructureError(f"plan implant step: {step.layer!r} is not a channel-pruned convolution of this model")
    group, member = found
    conv = twin.get_submodule(step.layer)
    if not isinstance(conv, nn.Conv2d):
        raise StructureError(f"plan implant step: {step.layer!r} is a {type(conv).__name__}, not a convolution")
    mask = kept.get(group.root, torch.ones(group.channels, dtype=torch.bool))
    alive_by_output = torch.ones(conv.out_channels, dtype=torch.bool)
    alive_by_output[member.indices] = mask[member.channels]
    survivors = torch.nonzero(alive_by_output).reshape(-1)
    if len(survivors) != step.channels:
        raise StructureError(
            f"plan implant step: {step.layer!r} keeps {len(survivors)} channels, the plan expects {step.channels}"
        )
    original = [int(survivors[slot]) for slot in step.implanted]
    replace_module(twin, step.layer, ImplantedConv2d.from_conv(conv, original, name=step.layer, init=step.init))


def _carried_over(kept: Masks, groups: Sequence[ChannelGroup]) -> Masks:
    """``kept`` for the groups traced after implanting (same roots, same channel counts)."""
    by_root = {group.root: group for group in groups}
    carried: Masks = {}
    for root, mask in kept.items():
        group = by_root.get(root)
        if group is None or group.channels != mask.numel():
            raise StructureError(f"group {root!r} changed when its convolutions took implants; cannot mask it")
        carried[root] = mask
    return carried
