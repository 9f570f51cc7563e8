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

In code a plan is a `Plan` of `RemoveStep` and `ImplantStep` (strict pydantic models: ``"12"`` is not
a list of indices, ``true`` is not a channel count); `Plan.to_json` writes exactly the layout above
(same keys, same order, a removal without ``kind``), so every plan.json ever written still replays
and reads back equal. `parse_plan` reads a plan.json object into a `Plan`, one `RunDirError` line per
problem. The format string is the plan's version: a new layout gets ``secateurs-plan/2`` and an entry
in `PLAN_MIGRATIONS` that upgrades ``/1`` plans to it.

The plan of a model is also kept on the model (`plan_of`), so pruning an already pruned model again
yields a plan that replays both stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from secateurs.errors import RunDirError, StructureError
from secateurs.structure.groups import build_graph
from secateurs.structure.implant import ImplantedConv2d

PLAN_FORMAT: Final = "secateurs-plan/1"
"""The current plan format: its version is the ``format`` string (see `PLAN_MIGRATIONS`)."""
PLAN_ATTRIBUTE = "_secateurs_plan_steps"


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RemoveStep(_Step):
    """Remove output channels ``removed`` (of ``channels``) of the group whose root layer is ``root``.

    Stored without ``kind`` (a step without one is a removal); the channels kept are the others.
    """

    kind: Literal["remove"] = "remove"
    root: str
    channels: int
    removed: list[int]

    def kept(self) -> list[int]:
        """The output channels this step keeps, ascending."""
        gone = set(self.removed)
        return [index for index in range(self.channels) if index not in gone]

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "channels": self.channels, "removed": list(self.removed)}


class ImplantStep(_Step):
    """Replace the k×k filters of output channels ``implanted`` of the conv ``layer`` by 1×1 implants."""

    kind: Literal["implant"]
    layer: str
    channels: int
    implanted: list[int]
    init: Literal["zero", "centre"] = "zero"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "implant",
            "layer": self.layer,
            "channels": self.channels,
            "implanted": list(self.implanted),
            "init": self.init,
        }


PlanStep = RemoveStep | ImplantStep


class Plan(BaseModel):
    """A physical pruning: its steps, in the order they are replayed (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    format: Literal["secateurs-plan/1"] = PLAN_FORMAT
    steps: tuple[PlanStep, ...] = Field(default=())

    def to_json(self) -> dict[str, Any]:
        """plan.json's object: ``format`` then ``steps``, each step's keys in their fixed order."""
        return {"format": self.format, "steps": [step.to_json() for step in self.steps]}

    def removals(self) -> list[RemoveStep]:
        return [step for step in self.steps if isinstance(step, RemoveStep)]

    def implants(self) -> list[ImplantStep]:
        return [step for step in self.steps if isinstance(step, ImplantStep)]


PLAN_MIGRATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``older format → function upgrading its plan.json object to the next format``; empty while
``secateurs-plan/1`` is the only format. A change to the layout adds ``secateurs-plan/N+1`` and the
function that upgrades ``/N`` to it, so every plan ever written still replays."""


def _step_error(step: Mapping[str, Any], index: int) -> RunDirError:
    """The one-line message for a step that does not validate: what its kind needs."""
    if step.get("kind", "remove") == "implant":
        need = "layer (a layer name), channels (an integer) and implanted (a list of integers)"
        if "init" in step and step["init"] not in ("zero", "centre"):
            return RunDirError(f"plan.json step {index}: init must be zero or centre, found {step['init']!r}")
    else:
        need = "root (a layer name), channels (an integer) and removed (a list of integers)"
    extra = sorted(set(step) - {"kind", "root", "layer", "channels", "removed", "implanted", "init"})
    if extra:
        return RunDirError(f"plan.json step {index}: unknown key {extra[0]!r}; a step needs {need}")
    return RunDirError(f"plan.json step {index}: needs {need}")


def parse_plan(raw: object) -> Plan:
    """The `Plan` of a plan.json object (or `Plan`, returned as is); any problem is one `RunDirError`.

    Older formats are upgraded through `PLAN_MIGRATIONS` first; ``raw`` is not mutated.
    """
    if isinstance(raw, Plan):
        return raw
    if not isinstance(raw, dict):
        raise RunDirError(f"plan.json: expected format {PLAN_FORMAT!r}, found {type(raw).__name__!r}")
    while isinstance(raw.get("format"), str) and raw["format"] in PLAN_MIGRATIONS:
        raw = PLAN_MIGRATIONS[raw["format"]](raw)
    if raw.get("format") != PLAN_FORMAT:
        raise RunDirError(f"plan.json: expected format {PLAN_FORMAT!r}, found {raw.get('format')!r}")
    unknown = sorted(set(raw) - {"format", "steps"})
    if unknown:
        raise RunDirError(f"plan.json: unknown key {unknown[0]!r}; a plan holds format and steps")
    steps = raw.get("steps")
    if not isinstance(steps, list):
        raise RunDirError("plan.json: 'steps' must be a list")
    parsed: list[PlanStep] = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise RunDirError(f"plan.json step {index}: expected an object, found {type(step).__name__}")
        kind = step.get("kind", "remove")
        if kind not in ("remove", "implant"):
            raise RunDirError(f"plan.json step {index}: unknown kind {kind!r}; accepted: remove, implant")
        try:
            parsed.append(RemoveStep.model_validate(step) if kind == "remove" else ImplantStep.model_validate(step))
        except ValidationError:
            raise _step_error(step, index) from None
    return Plan(steps=tuple(parsed))


def plan_of(model: nn.Module) -> list[PlanStep]:
    """The steps that produced ``model`` from its unpruned architecture (empty when none)."""
    steps = getattr(model, PLAN_ATTRIBUTE, None)
    return list(steps) if isinstance(steps, list | tuple) else []


def make_plan(steps: Sequence[PlanStep]) -> Plan:
    return Plan(steps=tuple(steps))


def replay_plan(model: nn.Module, plan: Plan | Mapping[str, Any], example_inputs: torch.Tensor) -> nn.Module:
    """Apply ``plan``'s steps to ``model`` (mutated and returned); a mismatch is a `RunDirError` naming
    the step and the layer. ``plan`` is a `Plan` or a plan.json object (`parse_plan`). On error the
    model is left partly pruned: pass a copy you can discard."""
    parsed = parse_plan(dict(plan) if isinstance(plan, Mapping) else plan)
    graph: tp.DependencyGraph | None = None
    for index, step in enumerate(parsed.steps):
        if isinstance(step, RemoveStep):
            if graph is None:
                graph = build_graph(model, example_inputs)
            _remove(model, graph, step, index)
        else:
            _implant(model, step, index)
            graph = None  # the module changed: trace again before the next removal
    setattr(model, PLAN_ATTRIBUTE, [*plan_of(model), *parsed.steps])
    return model


def _layer(model: nn.Module, name: str, index: int) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise RunDirError(f"plan.json step {index}: the model has no layer {name!r}") from None


def _remove(model: nn.Module, graph: tp.DependencyGraph, step: RemoveStep, index: int) -> None:
    root_name, channels, removed = step.root, step.channels, step.removed
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
            graph.get_pruning_group(root, pruner.prune_out_channels, list(removed)).prune(record_history=False)
        except StructureError as error:
            raise RunDirError(f"plan.json step {index}: {error}") from None


def _implant(model: nn.Module, step: ImplantStep, index: int) -> None:
    name, channels = step.layer, step.channels
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
        replacement = ImplantedConv2d.from_conv(layer, list(step.implanted), name=name, init=step.init)
    except StructureError as error:
        raise RunDirError(f"plan.json step {index}: {error}") from None
    replace_module(model, name, replacement)


def replace_module(model: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put ``replacement`` at the dotted path ``name`` of ``model`` (mutates the parent module)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
