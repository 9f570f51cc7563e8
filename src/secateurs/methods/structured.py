"""Structured (channel) pruning: choose the channels each group keeps, remove the others physically.

The shared pipeline of every ``kind = "structured"`` method (`StructuredPruning`): trace the model
with Torch-Pruning's dependency graph into coupled channel groups (`structure.groups`; the final
classifier's outputs and excluded layers are frozen), let the method choose the channels each group
keeps (`StructuredPruning.choose`), build `plan.json` and replay it on a copy (`structure.surgery`):
the returned model is physically smaller, exactly what `load_run` rebuilds, and the input model is
not modified. ``info`` records the target, the policy and, measured on the pruned model, what was
realised (`allocation.realised`: parameters, MACs and channels removed).

Two choosers: `methods.channel_pruning.ChannelPruning`, secateurs' own (a channel criterion, an
allocation policy, caps, a target search: ``hap``, ``l1-filter``, ``taylor``, …), and
`methods.torch_pruning`, Torch-Pruning's own pruners at the same target.

Every mask here is per group channel (or unit) and True = keep.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.allocation.realised import realised_report
from secateurs.config import PruneConfig
from secateurs.methods.base import Method, OptionsT, PruneContext, PruneOutcome
from secateurs.sparsity.masks import baked_copy
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGraph, channel_graph
from secateurs.structure.plan import plan_of
from secateurs.structure.surgery import apply_plan, removal_plan

Masks = dict[str, torch.Tensor]
"""Per group root: a boolean mask over the group's channels."""


@dataclass
class ChannelChoice:
    """What a structured method decided, before any surgery."""

    kept: Masks
    """Per prunable group: True = the channel stays (implanted channels stay); absent: all stay."""
    implanted: Masks = field(default_factory=dict)
    """Per group: kept channels whose filters become 1×1 implants."""
    info: dict[str, Any] = field(default_factory=dict)
    score_seconds: float = 0.0
    implant_init: str = "zero"


class StructuredPruning(Method[OptionsT]):
    """Base of the structured methods: trace, `choose`, plan, replay on a copy, report what was realised."""

    kind = "structured"
    scopes = ("layerwise", "global", "normalized")

    def check_request(self, config: PruneConfig, options: OptionsT) -> None:
        """Refuse, before any work, what the method cannot do with ``config`` and ``options`` (`ConfigError`)."""

    @abstractmethod
    def choose(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        sizes: SizeModel,
        config: PruneConfig,
        options: OptionsT,
        context: PruneContext,
    ) -> ChannelChoice:
        """The channels every group keeps (``work`` is the baked copy ``graph`` traced; leave it unchanged)."""

    def apply(self, model: nn.Module, config: PruneConfig, options: OptionsT, context: PruneContext) -> PruneOutcome:
        """A physically pruned copy of ``model`` (``model`` itself is not modified) and its plan."""
        self.check_request(config, options)
        work = baked_copy(model)
        graph = channel_graph(work, context.example_inputs, exclude=config.exclude)
        input_shape = tuple(context.example_inputs.shape[1:])
        sizes = SizeModel(graph, input_shape)
        choice = self.choose(work, graph, sizes, config, options, context)
        previous = plan_of(work)
        plan = removal_plan(
            graph.groups, choice.kept, choice.implanted, previous=previous, implant_init=choice.implant_init
        )
        pruned = apply_plan(work, plan, context.example_inputs)
        info = {**choice.info}
        info.update(realised_report(sizes, pruned, graph.prunable(), choice.kept, choice.implanted, input_shape))
        info["implanted_filters"] = sum(
            len(step["implanted"]) for step in plan["steps"][len(previous) :] if step.get("kind") == "implant"
        )
        return PruneOutcome(model=pruned, plan=plan, info=info, score_seconds=choice.score_seconds)
