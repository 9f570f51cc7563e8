"""The channel view: every read or write of a group's channels goes through here, once.

A group member (`structure.groups.Member`) is one layer's share of a group's channels. Its handler
(`secateurs.layers`) says how the layer's tensors are cut into one row per channel; this module
applies it, for every kind of layer alike:

* `member_slices` cuts a tensor in the member's layout into ``(len(indices), -1)`` rows, row i
  belonging to group channel ``member.channels[i]``; `layouts` gives every member's weight in that
  layout (a composite layer's equivalent dense weight);
* `leaf_layers` / `composed` / `out_values` handle layers whose weights live in leaf layers (neural
  implants): leaf-shaped tensors (weights, gradients, products) compose into the layout, per-leaf
  channel values (Hessian traces) into the member's channels, so no caller tests a layer's type;
* `row_entries` counts the parameters in each row (n_c of a filter);
* `channel_sums` adds per-row values into the group's channels (the group-sum rule);
* `removed_entries` finds the leaf weight entries that carry a group's removed channels (the output
  rows of its filters and every consumer's input slice), which `channels_removed` zeroes for the
  duration of a ``with`` block and `structure.surgery.keep_masks` turns into keep-masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.layers import Kind, LayerHandler, Role, handler_for, leaf_weights
from secateurs.structure.groups import ChannelGroup, Member


def member_slices(
    group: ChannelGroup,
    tensors: Mapping[str, torch.Tensor],
    *,
    roles: Iterable[Role] = ("out",),
    kinds: Iterable[Kind] = ("filter",),
) -> Iterator[tuple[Member, torch.Tensor]]:
    """Yield ``(member, rows)`` for the members with a tensor in ``tensors`` (keyed by layer name).

    ``tensors[name]`` has the layout of the member's handler (``module.weight`` for Conv2d/Linear/BN,
    the dense equivalent kernel for a composite layer); ``rows`` is its slice for the member's
    indices as a ``(len(indices), -1)`` matrix, row i belonging to group channel ``member.channels[i]``.
    """
    roles, kinds = tuple(roles), tuple(kinds)
    for member in group.members:
        if member.role not in roles or member.kind not in kinds or member.name not in tensors:
            continue
        yield member, member.handler.rows(member.module, tensors[member.name], member.indices, member.role)


def layouts(groups: Iterable[ChannelGroup]) -> dict[str, torch.Tensor]:
    """Every member layer's weight in its handler's layout, keyed by layer name (detached)."""
    result: dict[str, torch.Tensor] = {}
    for group in groups:
        for member in group.members:
            if member.name not in result:
                result[member.name] = member.handler.layout(member.module).detach()
    return result


def channel_sums(group: ChannelGroup, per_member: Iterable[tuple[Member, torch.Tensor]]) -> torch.Tensor:
    """Add per-row values (one per member index) into the group's channels (the group-sum rule)."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    for member, values in per_member:
        total.index_add_(0, member.channels, values.detach().to(torch.float64).reshape(-1))
    return total


def leaf_layers(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers holding the weights of layer ``name`` (itself, or a composite's children), by full name."""
    handler = _handler(module)
    if not handler.composite:
        return [(name, module)]
    return [(f"{name}.{child}" if child else name, leaf) for child, leaf in handler.leaves(module)]


def composed(module: nn.Module, pieces: list[torch.Tensor]) -> torch.Tensor:
    """Tensors shaped like ``module``'s leaf weights (`leaf_layers` order) in its layout."""
    return _handler(module).compose(module, pieces)


def out_values(member: Member, per_leaf: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Values per output channel of each leaf layer (keyed by the leaf's full name) for ``member``'s indices."""
    leaves = leaf_layers(member.name, member.module)
    values = member.handler.compose_out(member.module, [per_leaf[name] for name, _ in leaves])
    return values[member.indices]


def row_entries(member: Member) -> torch.Tensor:
    """Parameters in each of ``member``'s rows (float64): n_c = C_in·k·k of a filter, C_in of an implant."""
    ones = [torch.ones_like(weight, dtype=torch.float64) for weight in leaf_weights(member.module)]
    layout = composed(member.module, ones)
    return member.handler.rows(member.module, layout, member.indices, member.role).sum(1)


def removed_entries(
    group: ChannelGroup, kept: torch.Tensor
) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """``(leaf name, leaf layer, flat weight indices)`` carrying ``group``'s channels where ``kept`` is False.

    Covers the output rows of every filter member and every consumer's input slice (norms are left
    alone: their channels no longer reach anything once those are zero). ``kept`` is a boolean mask
    over the group's channels (True = keep).
    """
    if kept.dtype != torch.bool or tuple(kept.shape) != (group.channels,):
        raise StructureError(f"group {group.root!r}: kept must be a boolean mask of {group.channels} channels")
    for member in group.members:
        if member.kind != "filter":
            continue
        gone = ~kept[member.channels]
        if not bool(gone.any()):
            continue
        leaves = leaf_layers(member.name, member.module)
        weights = leaf_weights(member.module)
        codes, offset = [], 1  # 0 marks layout entries that no leaf weight fills (an implant's off-centre taps)
        for weight in weights:
            codes.append(torch.arange(offset, offset + weight.numel(), dtype=torch.long).reshape(weight.shape))
            offset += weight.numel()
        rows = member.handler.rows(member.module, composed(member.module, codes), member.indices, member.role)
        chosen = rows[gone].reshape(-1)
        chosen = chosen[chosen > 0] - 1
        start = 0
        for (name, leaf), weight in zip(leaves, weights, strict=True):
            inside = chosen[(chosen >= start) & (chosen < start + weight.numel())] - start
            start += weight.numel()
            if inside.numel():
                yield name, leaf, torch.unique(inside)


@contextlib.contextmanager
def channels_removed(group: ChannelGroup, kept: torch.Tensor) -> Iterator[None]:
    """Within the block, ``group``'s channels where ``kept`` is False are removed as masks would remove them.

    Zeroes, in place, the weight entries `removed_entries` finds (so in eval mode the model computes
    what the physically pruned one computes) and restores them exactly on exit. The leaf weights must
    be plain parameters (bake masks in first: `sparsity.masks.baked_copy`). Mutates the group's layers
    only inside the block.
    """
    saved: list[tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, leaf, flat in removed_entries(group, kept):
                weight = _handler(leaf).weight(leaf)
                if not isinstance(weight, nn.Parameter):
                    raise StructureError(f"layer {name!r}: its weight is computed (masks live?); bake them in first")
                position = torch.unravel_index(flat, weight.shape)
                saved.append((weight, position, weight.data[position].clone()))
                weight.data[position] = 0
        yield
    finally:
        with torch.no_grad():
            for weight, position, values in reversed(saved):
                weight.data[position] = values


def _handler(module: nn.Module) -> LayerHandler[Any]:
    handler = handler_for(module)
    if handler is None:
        raise StructureError(f"{type(module).__name__} has no layer handler")
    return handler
