"""Physical channel removal (through Torch-Pruning), neural implants, and the same removal as masks.

`build_plan` turns a choice of channels (per group: a keep-mask, and which kept channels become
implants) into a `Plan` (`removal_plan`: the same as its plan.json object, for callers that hold
plans as JSON); `apply_plan` replays them on a copy of the model, so the physically pruned model is by construction
what a later `load_run` rebuilds; the pruned copy must pass a forward pass on the example inputs or
the result is a `StructureError` and nothing is returned.

`keep_masks` expresses the same removal as keep-masks on the leaf layers' weights: the removed
channels' filters *and every consumer's input slice* are zeroed (`channel_view.removed_entries`), so
their values (batch-norm shifts, residual sums) can no longer reach the output. In eval mode the
masked model then computes exactly what the physically pruned one computes; tests compare the two.

Every mask here is per group channel, True = keep (ARCHITECTURE.md); implant masks mark kept
channels that become implants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.sparsity.masks import MaskStore, independent_copy
from secateurs.structure.channel_view import removed_entries
from secateurs.structure.groups import ChannelGroup
from secateurs.structure.implant import implant_geometry
from secateurs.structure.plan import (
    ImplantStep,
    Plan,
    PlanStep,
    RemoveStep,
    make_plan,
    parse_plan,
    plan_of,
    replay_plan,
)


def implantable(group: ChannelGroup) -> bool:
    """Whether every filter writing this group's channels can take a 1×1 implant (plain Conv2d)."""
    filters = group.out_filters()
    return bool(filters) and all(
        type(m.module) is nn.Conv2d and implant_geometry(m.module) is not None for m in filters
    )


def build_plan(
    groups: Sequence[ChannelGroup],
    kept: Mapping[str, torch.Tensor],
    implanted: Mapping[str, torch.Tensor] | None = None,
    *,
    previous: Sequence[PlanStep] = (),
    implant_init: str = "zero",
) -> Plan:
    """A `Plan` keeping ``kept[root]`` (boolean per channel, True = keep) of each group, then implanting.

    Groups absent from ``kept`` keep every channel. ``implanted[root]`` marks kept channels whose
    filters become 1×1 implants; their indices in the implant steps are renumbered after the
    removals. ``previous`` steps (an earlier pruning of the same model) come first. ``implant_init``
    is how implants start (`ImplantedConv2d.from_conv`: ``zero`` or ``centre``). Nothing is
    modified; a choice the groups cannot take is a `StructureError`.
    """
    implanted = implanted or {}
    if implant_init not in ("zero", "centre"):
        raise StructureError(f"implant_init must be zero or centre, got {implant_init!r}")
    init: Literal["zero", "centre"] = "zero" if implant_init == "zero" else "centre"
    steps: list[PlanStep] = list(previous)
    by_root = {group.root: group for group in groups}
    for root, mask in kept.items():
        group = by_root[root]
        _check_mask(group, mask, "kept", removes=~mask)
        indices = torch.nonzero(~mask).reshape(-1).tolist()
        if len(indices) >= group.channels:
            raise StructureError(f"removing all {group.channels} channels of {root!r} would empty the layer")
        if indices:
            steps.append(RemoveStep(root=root, channels=group.channels, removed=indices))
    for root, mask in implanted.items():
        group = by_root[root]
        _check_mask(group, mask, "implanted", removes=mask)
        if not bool(mask.any()):
            continue
        gone = ~kept[root] if root in kept else torch.zeros(group.channels, dtype=torch.bool)
        if bool((mask & gone).any()):
            raise StructureError(f"group {root!r}: a channel cannot be both removed and implanted")
        if not implantable(group):
            raise StructureError(f"group {root!r} cannot take implants (its filters are not all plain Conv2d)")
        for member in group.out_filters():
            conv = member.module
            assert isinstance(conv, nn.Conv2d)
            removed_indices = member.indices[gone[member.channels]]
            chosen = member.indices[mask[member.channels]]
            renumbered = [int(i) - int((removed_indices < i).sum()) for i in chosen]
            steps.append(
                ImplantStep(
                    kind="implant",
                    layer=member.name,
                    channels=conv.out_channels - len(removed_indices),
                    implanted=sorted(renumbered),
                    init=init,
                )
            )
    return make_plan(steps)


def removal_plan(
    groups: Sequence[ChannelGroup],
    kept: Mapping[str, torch.Tensor],
    implanted: Mapping[str, torch.Tensor] | None = None,
    *,
    previous: Sequence[PlanStep] = (),
    implant_init: str = "zero",
) -> dict[str, Any]:
    """`build_plan` as its plan.json object (`Plan.to_json`)."""
    return build_plan(groups, kept, implanted, previous=previous, implant_init=implant_init).to_json()


def _check_mask(group: ChannelGroup, mask: torch.Tensor, what: str, *, removes: torch.Tensor) -> None:
    if mask.dtype != torch.bool or tuple(mask.shape) != (group.channels,):
        raise StructureError(f"group {group.root!r}: {what} must be a boolean mask of {group.channels} channels")
    if not group.prunable and bool(removes.any()):
        raise StructureError(f"group {group.root!r} may not be pruned: {group.frozen}")


def apply_plan(model: nn.Module, plan: Plan | Mapping[str, Any], example_inputs: torch.Tensor) -> nn.Module:
    """A physically pruned copy of ``model`` (which is not changed), checked by one forward pass.

    ``plan`` is a `Plan` or its plan.json object. When it starts with the steps that already
    produced ``model`` (`plan_of`, as plans from `build_plan(..., previous=plan_of(model))` do),
    those are not applied twice.
    """
    previous = plan_of(model)
    steps = list(parse_plan(dict(plan) if isinstance(plan, Mapping) else plan).steps)
    if previous and steps[: len(previous)] == previous:
        steps = steps[len(previous) :]
    clone = independent_copy(model)
    replay_plan(clone, make_plan(steps), example_inputs)
    flags = {module: module.training for module in clone.modules()}
    clone.eval()
    try:
        with torch.no_grad():
            clone(example_inputs)
    except Exception as error:
        raise StructureError(
            f"the pruned {type(model).__name__} fails its forward pass ({type(error).__name__}: {error}); "
            "Torch-Pruning missed a coupling in this model"
        ) from None
    finally:
        for module, training in flags.items():
            module.training = training
    return clone


def keep_masks(groups: Sequence[ChannelGroup], kept: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep-masks (``leaf.weight`` name → bool) expressing ``kept`` (per group channel, True = keep).

    Zeroes the removed channels' output filters and every consumer's input slices, on the leaf
    layers that hold the weights (an implanted layer's ``kept`` and ``implant`` children). Groups
    absent from ``kept`` keep everything. Returns new masks; nothing is modified.
    """
    masks: dict[str, torch.Tensor] = {}
    for group in groups:
        mask = kept.get(group.root)
        if mask is None:
            continue
        for name, leaf, flat in removed_entries(group, mask):
            weight = getattr(leaf, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise StructureError(f"layer {name!r}: masks need a tensor 'weight' to mask")
            keep = masks.setdefault(f"{name}.weight", torch.ones_like(weight, dtype=torch.bool))
            keep.view(-1)[flat] = False
    return masks


def masked_copy(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with ``masks`` installed (the original is not changed)."""
    clone = independent_copy(model)
    store = MaskStore.attached(clone)
    store.update_(masks)
    return clone
