"""``plan.json``: what a physical pruning did, replayable on a fresh model (no pickle).

Format ``secateurs-plan/1``::

    {"format": "secateurs-plan/1",
     "steps": [{"root": "stages.0.0.conv1", "channels": 16, "removed": [3, 7]},
               {"kind": "implant", "layer": "stages.0.0.conv1", "channels": 14,
                "implanted": [2, 9], "init": "zero"}]}

A *remove* step (``kind`` absent or ``"remove"``) names the root layer of a coupled channel group
(Torch-Pruning's dependency graph), its output-channel count before the step, and the output
channels removed; Torch-Pruning removes them from every coupled layer. An *implant* step replaces
the k×k filters of output channels ``implanted`` of the ``nn.Conv2d`` ``layer`` (``channels`` output
channels at that point) by 1×1 implants (`ImplantedConv2d`) initialised as ``init`` says (``zero``,
the default, or ``centre``: the centre tap of the replaced kernel). Steps are applied in order, and
indices refer to the model as left by the previous steps. Replaying the steps on the registry's
fresh model reproduces the pruned architecture exactly; the weights then come from
``model.safetensors``.

The plan of a model is also kept on the model (`plan_of`), so pruning an already pruned model again
yields a plan that replays both stages.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateurs.errors import RunDirError, StructureError
from secateurs.structure.groups import build_graph
from secateurs.structure.implant import ImplantedConv2d

PLAN_FORMAT = "secateurs-plan/1"
PLAN_ATTRIBUTE = "_secateurs_plan_steps"


def plan_of(model: nn.Module) -> list[dict[str, Any]]:
    """The steps that produced ``model`` from its unpruned architecture (empty when none)."""
    steps = getattr(model, PLAN_ATTRIBUTE, None)
    return [dict(step) for step in steps] if isinstance(steps, list) else []


def make_plan(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": PLAN_FORMAT, "steps": steps}


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def replay_plan(model: nn.Module, plan: dict[str, Any], example_inputs: torch.Tensor) -> nn.Module:
    """Apply ``plan``'s steps to ``model`` (mutated and returned); a mismatch is a `RunDirError` naming
    the step and the layer. On error the model is left partly pruned: pass a copy you can discard."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise RunDirError(f"plan.json: expected format {PLAN_FORMAT!r}, found {found!r}")
    steps = plan.get("steps")
    if not isinstance(steps, list):
        raise RunDirError("plan.json: 'steps' must be a list")
    graph: tp.DependencyGraph | None = None
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise RunDirError(f"plan.json step {index}: expected an object, found {type(step).__name__}")
        kind = step.get("kind", "remove")
        if kind == "remove":
            if graph is None:
                graph = build_graph(model, example_inputs)
            _remove(model, graph, step, index)
        elif kind == "implant":
            _implant(model, step, index)
            graph = None  # the module changed: trace again before the next removal
        else:
            raise RunDirError(f"plan.json step {index}: unknown kind {kind!r}; accepted: remove, implant")
    setattr(model, PLAN_ATTRIBUTE, [*plan_of(model), *[dict(step) for step in steps]])
    return model


def _layer(model: nn.Module, name: str, index: int) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise RunDirError(f"plan.json step {index}: the model has no layer {name!r}") from None


def _indices(step: dict[str, Any], key: str, index: int) -> tuple[str, int, list[int]]:
    """``(layer name, channels, indices)`` of a step; anything but a string and integers is a `RunDirError`."""
    name_key = "root" if key == "removed" else "layer"
    name, channels, indices = step.get(name_key), step.get("channels"), step.get(key)
    if not (
        isinstance(name, str)
        and _is_integer(channels)
        and isinstance(indices, list)
        and all(_is_integer(i) for i in indices)
    ):
        raise RunDirError(
            f"plan.json step {index}: needs {name_key} (a layer name), channels (an integer) and {key} "
            "(a list of integers)"
        )
    assert isinstance(channels, int)
    return name, channels, [int(i) for i in indices]


def _remove(model: nn.Module, graph: tp.DependencyGraph, step: dict[str, Any], index: int) -> None:
    root_name, channels, removed = _indices(step, "removed", index)
    root = _layer(model, root_name, index)
    pruner = graph.get_pruner_of_module(root)
    if pruner is None or root not in graph.module2node:
        raise RunDirError(f"plan.json step {index}: layer {root_name!r} cannot be channel-pruned")
    found = pruner.get_out_channels(root)
    if found != channels:
        raise RunDirError(
            f"plan.json step {index}: layer {root_name!r} has {found} output channels, the plan expects {channels}"
        )
    if any(not 0 <= i < channels for i in removed) or len(set(removed)) != len(removed) or len(removed) >= channels:
        raise RunDirError(
            f"plan.json step {index}: removed indices of {root_name!r} must be distinct, "
            f"in [0, {channels}), and leave at least one channel"
        )
    if removed:
        try:
            graph.get_pruning_group(root, pruner.prune_out_channels, removed).prune(record_history=False)
        except StructureError as error:
            raise RunDirError(f"plan.json step {index}: {error}") from None


def _implant(model: nn.Module, step: dict[str, Any], index: int) -> None:
    name, channels, implanted = _indices(step, "implanted", index)
    layer = _layer(model, name, index)
    if type(layer) is not nn.Conv2d:
        raise RunDirError(
            f"plan.json step {index}: layer {name!r} is a {type(layer).__name__}; implants replace an nn.Conv2d"
        )
    if layer.out_channels != channels:
        raise RunDirError(
            f"plan.json step {index}: layer {name!r} has {layer.out_channels} output channels, "
            f"the plan expects {channels}"
        )
    try:
        replacement = ImplantedConv2d.from_conv(layer, implanted, name=name, init=str(step.get("init", "zero")))
    except StructureError as error:
        raise RunDirError(f"plan.json step {index}: {error}") from None
    replace_module(model, name, replacement)


def replace_module(model: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put ``replacement`` at the dotted path ``name`` of ``model`` (mutates the parent module)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
