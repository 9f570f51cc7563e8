"""Coupled channel groups, from Torch-Pruning's `DependencyGraph` (no tracer of our own).

A *group* is a set of channels that must be removed together: the output channels of a convolution,
the batch norm after it, the matching input slices of every consumer, and — through residual
additions, concatenations, depthwise convolutions and flatten → linear — everything tied to them.
Torch-Pruning finds the coupling; this module turns each of its groups into a `ChannelGroup`: a
channel count (the root layer's output channels), the *members* (layer, role, which of its indices
belong to which group channel) and the *units* (channels that a grouped convolution ties together).

Rules:

* A group is **frozen** (never pruned) when its channels reach the model output (the final
  classifier's outputs), when an ``exclude`` pattern matches one of its output layers, or when a
  grouped convolution reads only part of its input channels from it (a concatenation feeding a
  grouped convolution cannot be pruned consistently). Frozen groups carry the reason.
* A layer type with parameters but no layer handler (`secateurs.layers`) is a `StructureError` naming
  the layer; parameter-free operations (activations, pooling, additions) need no handler.
* A model Torch-Pruning cannot trace is a `StructureError` with its reason.

Groups start at every layer type whose handler is a filter (`layers.filter_types`); layer types
Torch-Pruning does not know are pruned through their handlers (`structure.pruners`). How a member's
channels are read (rows of its weights, its leaf layers) is the channel view, `structure.channel_view`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateurs.errors import StructureError
from secateurs.layers import Kind, LayerHandler, Role, accepted_layers, filter_types, handler_for
from secateurs.structure.pruners import custom_pruners, traceable

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Member:
    """One layer's share of a group: its ``indices`` (along ``role``'s dimension) and their group channels."""

    name: str
    module: nn.Module
    handler: LayerHandler[Any]
    role: Role
    indices: torch.Tensor
    channels: torch.Tensor

    @property
    def kind(self) -> Kind:
        return self.handler.kind


@dataclass(eq=False)
class ChannelGroup:
    """Channels removed together. ``units[c]`` is the unit of channel c (tied channels share one)."""

    root: str
    channels: int
    members: tuple[Member, ...]
    units: torch.Tensor
    frozen: str | None = None
    """Why the group may not be pruned; None when it may."""

    @property
    def prunable(self) -> bool:
        return self.frozen is None

    @property
    def unit_count(self) -> int:
        return int(self.units.max()) + 1 if self.channels else 0

    def unit_sizes(self) -> torch.Tensor:
        return torch.bincount(self.units, minlength=self.unit_count)

    def unit_values(self, channel_values: torch.Tensor) -> torch.Tensor:
        """Sum ``channel_values`` (one per channel) over each unit."""
        out = torch.zeros(self.unit_count, dtype=channel_values.dtype)
        return out.index_add(0, self.units, channel_values)

    def channels_of_units(self, unit_mask: torch.Tensor) -> torch.Tensor:
        """A per-channel boolean mask from a per-unit one."""
        return unit_mask[self.units]

    def out_filters(self) -> list[Member]:
        """Members whose output channels (filters) are this group's channels."""
        return [m for m in self.members if m.role == "out" and m.kind == "filter"]


@dataclass
class ChannelGraph:
    """A model's dependency graph and its channel groups (frozen ones included)."""

    model: nn.Module
    graph: tp.DependencyGraph
    groups: list[ChannelGroup]
    untraced: list[str] = field(default_factory=list)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def frozen(self) -> dict[str, str]:
        return {g.root: g.frozen for g in self.groups if g.frozen is not None}


def build_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (training flags restored); tracing failures are
    a `StructureError`."""
    flags = {module: module.training for module in model.modules()}
    try:
        with torch.enable_grad(), warnings_silenced(), traceable(model):
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                customized_pruners=custom_pruners(model),
                output_transform=_checked_output,
                verbose=False,
            )
    except Exception as error:
        reason = str(error) if isinstance(error, StructureError) else f"{type(error).__name__}: {error}"
        raise StructureError(f"Torch-Pruning cannot trace {type(model).__name__}: {reason}".strip()) from None
    finally:
        for module, training in flags.items():
            module.training = training
    return graph


def _checked_output(output: Any) -> Any:
    """The model's output, if Torch-Pruning can trace back from it (tensors with autograd history)."""
    tensors = tp.utils.flatten_as_list(output)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise StructureError(f"the model returns {type(output).__name__}, not tensors Torch-Pruning can trace")
    if not any(t.grad_fn is not None for t in tensors):
        raise StructureError("the model output carries no autograd history (computed under no_grad or detached)")
    return output


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def channel_graph(model: nn.Module, example_inputs: torch.Tensor, *, exclude: Sequence[str] = ()) -> ChannelGraph:
    """Trace ``model`` and return its channel groups (nothing is modified).

    Raises `StructureError` when the model cannot be traced, when Torch-Pruning reaches none of its
    Conv2d/Linear layers, or when a coupled layer has no handler (naming it).
    """
    graph = build_graph(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    roots = filter_types()
    leaves = [
        name for name, m in model.named_modules() if isinstance(m, roots) and not _inside_composite(name, model)
    ]
    traced = {names.get(m) for m in graph.module2node if isinstance(m, nn.Module)}
    untraced = [name for name in leaves if name not in traced]
    if leaves and len(untraced) == len(leaves):
        raise StructureError(
            f"Torch-Pruning traced none of the layers of {type(model).__name__} "
            "(is the output computed without autograd, or not a tensor?)"
        )
    if untraced:
        log.warning("layers not reached by Torch-Pruning's trace are left intact: %s", ", ".join(untraced))
    groups = []
    for tp_group in graph.get_all_groups(root_module_types=roots):
        groups.append(_convert(graph, tp_group, names, exclude))
    _check_patterns(exclude, groups)
    return ChannelGraph(model=model, graph=graph, groups=groups, untraced=untraced)


def _inside_composite(name: str, model: nn.Module) -> bool:
    """Whether layer ``name`` is a leaf of a composite layer (a neural implant's children)."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        handler = handler_for(model.get_submodule(".".join(parts[:depth])))
        if handler is not None and handler.composite:
            return True
    return False


def _convert(
    graph: tp.DependencyGraph, tp_group: Any, names: Mapping[nn.Module, str], exclude: Sequence[str]
) -> ChannelGroup:
    root_module = tp_group[0].dep.target.module
    root = names[root_module]
    channels = int(graph.get_out_channels(root_module))
    members: list[Member] = []
    frozen: str | None = None
    for item in tp_group:
        dep = item.dep
        module = dep.target.module
        role: Role = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
        if role == "out" and not dep.target.outputs:
            frozen = (
                frozen or f"its channels reach the model output (through {names.get(module, type(module).__name__)})"
            )
        if not isinstance(module, nn.Module):
            raise StructureError(
                f"group of {root!r} couples a bare parameter of shape {tuple(module.shape)}; no handler for it "
                f"(accepted layers: {accepted_layers()})"
            )
        if not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
            continue
        name = names.get(module, type(module).__name__)
        handler = handler_for(module)
        if handler is None:
            raise StructureError(
                f"layer {name!r} ({type(module).__name__}) is coupled to the channels of {root!r} but has no "
                f"channel handler; accepted: {accepted_layers()} (or register one: secateurs.layers."
                "register_layer_handler)"
            )
        members.append(
            Member(
                name=name,
                module=module,
                handler=handler,
                role=role,
                indices=torch.tensor(list(item.idxs), dtype=torch.long),
                channels=torch.tensor(list(item.root_idxs), dtype=torch.long),
            )
        )
    units, tie_problem = _units(channels, members)
    frozen = frozen or tie_problem
    for member in members:
        if member.role == "out" and member.kind == "filter" and _matches(member.name, exclude):
            frozen = frozen or f"layer {member.name!r} is excluded"
    return ChannelGroup(root=root, channels=channels, members=tuple(members), units=units, frozen=frozen)


def _units(channels: int, members: Sequence[Member]) -> tuple[torch.Tensor, str | None]:
    """Union channels that grouped convolutions tie (same position in every convolution group)."""
    parent = list(range(channels))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    problem = None
    for member in members:
        ties = member.handler.ties(member.module, member.role)
        if not ties:
            continue
        size = _dimension(member)
        if member.role == "in" and len(set(member.indices.tolist())) != size:
            problem = f"grouped convolution {member.name!r} reads only part of its inputs from this group"
            continue
        per_group = size // ties
        by_position: dict[int, int] = {}
        for index, channel in zip(member.indices.tolist(), member.channels.tolist(), strict=True):
            position = index % per_group
            if position in by_position:
                parent[find(channel)] = find(by_position[position])
            else:
                by_position[position] = channel
    roots = [find(i) for i in range(channels)]
    labels: dict[int, int] = {}
    units = torch.tensor([labels.setdefault(r, len(labels)) for r in roots], dtype=torch.long)
    return units, problem


def _dimension(member: Member) -> int:
    return member.handler.channels(member.module, member.role)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(f"{name}.weight", p) for p in patterns)


def _check_patterns(patterns: Sequence[str], groups: Sequence[ChannelGroup]) -> None:
    names = {m.name for g in groups for m in g.members if m.kind == "filter"}
    for pattern in patterns:
        if not any(_matches(name, [pattern]) for name in names):
            raise StructureError(f"exclude pattern {pattern!r} matches no layer; layers: {', '.join(sorted(names))}")
