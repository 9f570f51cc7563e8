"""``plan.json``: what a physical pruning removed, replayable on a fresh model (no pickle).

Format ``secateurs-plan/1``::

    {"format": "secateurs-plan/1",
     "steps": [{"root": "layer1.0.conv1", "channels": 16, "removed": [3, 7]}, ...]}

Each step names the root module of a coupled channel group (Torch-Pruning's dependency graph), its
output-channel count before the step, and the output channels removed. Replaying the steps in order
on the registry's fresh model reproduces the pruned architecture; the weights then come from
``model.safetensors``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateurs.errors import RunDirError

PLAN_FORMAT = "secateurs-plan/1"


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_step(step: object) -> bool:
    """Whether ``step`` has a string ``root``, an integer ``channels`` and a list of integer ``removed``."""
    return (
        isinstance(step, dict)
        and isinstance(step.get("root"), str)
        and _is_integer(step.get("channels"))
        and isinstance(step.get("removed"), list)
        and all(_is_integer(i) for i in step["removed"])
    )


def replay_plan(model: nn.Module, plan: dict[str, Any], example_inputs: torch.Tensor) -> nn.Module:
    """Apply ``plan``'s removals to ``model`` (mutated and returned); mismatches name the layer."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise RunDirError(f"plan.json: expected format {PLAN_FORMAT!r}, found {found!r}")
    steps = plan.get("steps")
    if not isinstance(steps, list):
        raise RunDirError("plan.json: 'steps' must be a list")
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    for index, step in enumerate(steps):
        if not _is_step(step):
            raise RunDirError(
                f"plan.json step {index}: needs root (a layer name), channels (an integer) and removed "
                "(a list of integers)"
            )
        root_name, channels, removed = step["root"], step["channels"], list(step["removed"])
        try:
            root = model.get_submodule(root_name)
        except AttributeError:
            raise RunDirError(f"plan.json step {index}: the model has no layer {root_name!r}") from None
        pruner = graph.get_pruner_of_module(root)
        found = pruner.get_out_channels(root) if pruner is not None else None
        if found is None:
            raise RunDirError(f"plan.json step {index}: layer {root_name!r} cannot be channel-pruned")
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
            graph.get_pruning_group(root, pruner.prune_out_channels, removed).prune()
    return model
