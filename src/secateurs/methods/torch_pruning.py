"""Torch-Pruning's own pruners, as registered baselines: ``tp-magnitude``, ``tp-taylor``, ``tp-hessian``
and ``tp-hessian-fixed``.

Fang, Ma, Song, Mi, Wang, "DepGraph: Towards Any Structural Pruning", CVPR 2023,
https://arxiv.org/abs/2301.12900 — the library secateurs uses for channel coupling (1.6.1).

What runs is Torch-Pruning's pipeline, not ours: its importance classes score its groups
(``GroupMagnitudeImportance(p=2)``, ``GroupTaylorImportance``, ``GroupHessianImportance``, each with
its default mean group reduction and mean normalisation), and its ``MetaPruner`` with
``global_pruning=True`` decides how many channels each group loses. Only the target is ours: for
``--target params`` (or ``macs``) the ``pruning_ratio`` handed to ``MetaPruner`` is bisected until the
pruned model lands closest to the requested fraction (matched parameter counts); ``--target
channels`` passes ``sparsity`` as the ratio. The importances are computed once on the unpruned model
(exactly what a one-shot ``MetaPruner.step`` does) and replayed for each probe of the search; the
chosen groups are then removed through secateurs' plan, so the result reloads from ``plan.json``.
Settings that differ from Torch-Pruning's defaults: the final classifier is ignored (as its
examples do), ``max_pruning_ratio`` = ``max_layer_ratio`` (0.95, our cap), ``round_to`` passed through.
With ``round_to`` Torch-Pruning's removal is not monotone in ``pruning_ratio`` (resnet20, round_to 16:
a ratio of 0.7 removes 70 % of the parameters, 0.9 removes none), so when the cap does not reach the
target the bisection starts below the first ratio of a 0.05·cap grid that does.

Data: Taylor uses the gradient of the mean loss over the calibration batches; Hessian accumulates
per-sample squared gradients over the first ``samples`` calibration images, eval mode throughout.

``tp-hessian`` is reported **as shipped**: in 1.6.1 ``GroupHessianImportance.accumulate_grad`` keys
its accumulator by parameter but tests membership by name, so every call overwrites it and the
importance sees only the last sample (ENVIRONMENT.md). ``tp-hessian-fixed`` is the same importance
with the accumulation corrected (`CorrectedHessianImportance`), a second row.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.config import PruneConfig
from secateurs.errors import ConfigError, StructureError
from secateurs.methods.base import Method, PruneContext, PruneOutcome, register_method
from secateurs.metrics.counts import count_macs, count_params
from secateurs.scoring.base import ScoreContext
from secateurs.scoring.hessian import prepared_copy
from secateurs.sparsity.masks import baked_copy
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ROOT_TYPES, ChannelGraph, channel_graph, warnings_silenced
from secateurs.structure.implant import ImplantedConv2d, ImplantPruner
from secateurs.structure.plan import plan_of
from secateurs.structure.surgery import apply_plan, removal_plan


class CorrectedHessianImportance(tp.importance.GroupHessianImportance):
    """``GroupHessianImportance`` whose accumulator really sums the squared per-sample gradients."""

    def accumulate_grad(self, model: nn.Module) -> None:
        for parameter in model.parameters():
            if parameter.grad is None:
                continue
            square = parameter.grad.detach().clone().pow(2)
            if parameter in self._accu_grad:
                self._accu_grad[parameter] += square
                self._counter[parameter] += 1
            else:
                self._accu_grad[parameter] = square
                self._counter[parameter] = 1


class PrecomputedImportance(tp.importance.Importance):
    """Replays importances computed once, looked up by the group's root layer name."""

    def __init__(self, by_root: dict[str, torch.Tensor], names: dict[nn.Module, str]) -> None:
        self.by_root = by_root
        self.names = names

    def __call__(self, group: Any) -> torch.Tensor:
        return self.by_root[self.names[group[0].dep.target.module]]


class TorchPruningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_layer_ratio: float = Field(0.95, gt=0, le=1)
    round_to: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    """Hessian only: per-sample gradients over this many calibration images (None: all)."""


class TorchPruningBaseline(Method):
    kind = "structured"
    default_scope = "global"
    paper = "arXiv 2301.12900 (Torch-Pruning 1.6.1)"
    Options = TorchPruningOptions
    gradients: ClassVar[str] = "none"
    """``none``, ``mean`` (one backward of the mean loss) or ``per-sample`` (Hessian accumulation)."""

    @abstractmethod
    def importance(self) -> tp.importance.Importance:
        """A fresh Torch-Pruning importance object."""

    def apply(self, model: nn.Module, config: PruneConfig, options: Any, context: PruneContext) -> PruneOutcome:
        if self.scope(config) != "global":
            raise ConfigError(f"method {self.name!r} runs Torch-Pruning's global pruning; scope must be 'global'")
        work = baked_copy(model)
        graph = channel_graph(work, context.example_inputs, exclude=config.exclude)
        started = time.perf_counter()
        by_root = self._importances(work, graph, options, context)
        score_seconds = time.perf_counter() - started
        sizes = SizeModel(graph, tuple(context.example_inputs.shape[1:]))
        frozen = [work.get_submodule(root) for root in graph.frozen()]

        def removal(ratio: float) -> dict[str, torch.Tensor]:
            return self._meta_removal(work, graph, by_root, frozen, ratio, options, context.example_inputs)

        def fraction(removed: dict[str, torch.Tensor]) -> float:
            size = sizes.size(removed, {})
            if config.target == "macs":
                return 1.0 - size.macs / sizes.original.macs
            return 1.0 - size.params / sizes.original.params

        if config.target == "channels":
            ratio, removed = config.sparsity, removal(config.sparsity)
        else:
            ratio, removed = _bisect(removal, fraction, config.sparsity, options.max_layer_ratio, config.target)
        plan = removal_plan(graph.groups, removed, previous=plan_of(work))
        pruned = apply_plan(work, plan, context.example_inputs)
        total = sum(g.channels for g in graph.prunable())
        params, macs = count_params(pruned), count_macs(pruned, tuple(context.example_inputs.shape[1:]))
        info = {
            "target": {"quantity": config.target, "sparsity": config.sparsity, "scope": "global"},
            "pruning_ratio": ratio,
            "realised": {
                "params_removed": 1.0 - params / sizes.original.params,
                "macs_removed": 1.0 - macs / sizes.original.macs,
                "channels_removed": sum(int(m.sum()) for m in removed.values()) / total if total else 0.0,
            },
            "params": params,
            "macs": macs,
            "importance": type(self.importance()).__name__,
            "frozen": graph.frozen(),
        }
        return PruneOutcome(model=pruned, plan=plan, info=info, score_seconds=score_seconds)

    def _importances(
        self, work: nn.Module, graph: ChannelGraph, options: Any, context: PruneContext
    ) -> dict[str, torch.Tensor]:
        """Torch-Pruning's importance of every prunable group of ``work``, by root layer name."""
        scorer = self.importance()
        subject = work
        frozen = graph.frozen()
        if self.gradients != "none":
            batches = ScoreContext(context.generator, batches=context.batches).require_batches(self.name)
            subject = prepared_copy(work)
            graph = channel_graph(subject, context.example_inputs)
            self._gradients(subject, scorer, batches, options, context)
        names = {module: name for name, module in subject.named_modules()}
        result = {}
        with torch.no_grad():
            for group in graph.graph.get_all_groups(root_module_types=ROOT_TYPES):
                root = names[group[0].dep.target.module]
                if root in frozen:
                    continue
                value = scorer(group)
                if value is None:
                    raise StructureError(f"Torch-Pruning's {type(scorer).__name__} gave no importance for {root!r}")
                result[root] = value.detach().cpu().to(torch.float64)
        return result

    def _gradients(
        self,
        model: nn.Module,
        scorer: tp.importance.Importance,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        options: Any,
        context: PruneContext,
    ) -> None:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            if self.gradients == "mean":
                for inputs, targets in batches:
                    (context.loss_fn(model(inputs.contiguous()), targets) / len(batches)).backward()
                return
            limit = options.samples or sum(len(t) for _, t in batches)
            seen = 0
            scorer.zero_grad()
            for inputs, targets in batches:
                for index in range(min(len(targets), limit - seen)):
                    model.zero_grad()
                    sample = inputs[index : index + 1].contiguous()
                    context.loss_fn(model(sample), targets[index : index + 1]).backward()
                    scorer.accumulate_grad(model)
                    seen += 1
                if seen >= limit:
                    break

    def _meta_removal(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        by_root: dict[str, torch.Tensor],
        frozen: list[nn.Module],
        ratio: float,
        options: Any,
        example_inputs: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The channels ``MetaPruner`` would remove at ``ratio`` (nothing is pruned)."""
        names = {module: name for name, module in work.named_modules()}
        with warnings_silenced(), torch.enable_grad():
            pruner = tp.pruner.MetaPruner(
                work,
                example_inputs,
                importance=PrecomputedImportance(by_root, names),
                global_pruning=True,
                pruning_ratio=ratio,
                max_pruning_ratio=options.max_layer_ratio,
                ignored_layers=frozen,
                round_to=options.round_to,
                root_module_types=list(ROOT_TYPES),
                customized_pruners={ImplantedConv2d: ImplantPruner()},
            )
            chosen = list(pruner.step(interactive=True) or ())
        by_name = {g.root: g for g in graph.prunable()}
        removed = {}
        for group in chosen:
            root = names[group[0].dep.target.module]
            mask = torch.zeros(by_name[root].channels, dtype=torch.bool)
            mask[list(group[0].idxs)] = True
            removed[root] = mask
        return removed


def _bisect(
    removal: Any, fraction: Any, target: float, cap: float, quantity: str
) -> tuple[float, dict[str, torch.Tensor]]:
    """The ``pruning_ratio`` in [0, cap) whose removal lands closest to ``target``."""
    low, high = 0.0, min(cap, 0.999)
    best = (low, removal(low))
    most = (high, removal(high))
    if fraction(most[1]) < target - 1e-9:
        # With round_to, Torch-Pruning's removal is not monotone in the ratio (at high ratios its
        # rounding can keep whole layers): look for the first ratio on a coarse grid that reaches it.
        reached = None
        seen = fraction(most[1])
        for index in range(1, 20):
            ratio = high * index / 20
            trial = (ratio, removal(ratio))
            seen = max(seen, fraction(trial[1]))
            if fraction(trial[1]) >= target:
                reached = trial
                break
            low, best = trial
        if reached is None:
            raise StructureError(
                f"Torch-Pruning cannot remove {target:.4f} of the {quantity}: at most {seen:.4f} "
                f"with max_pruning_ratio={cap}"
            )
        high, most = reached[0], reached
    for _ in range(30):
        middle = (low + high) / 2
        trial = (middle, removal(middle))
        if fraction(trial[1]) >= target:
            high, most = middle, trial
        else:
            low, best = middle, trial
        if high - low < 1e-4:
            break
    return min((best, most), key=lambda pair: abs(fraction(pair[1]) - target))


class TorchPruningMagnitude(TorchPruningBaseline):
    name = "tp-magnitude"
    description = "Torch-Pruning MetaPruner, global, GroupMagnitudeImportance(p=2), at the target size"

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2)


class TorchPruningTaylor(TorchPruningBaseline):
    name = "tp-taylor"
    description = "Torch-Pruning MetaPruner, global, GroupTaylorImportance, at the target size"
    needs_data = True
    gradients = "mean"

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupTaylorImportance()


class TorchPruningHessian(TorchPruningBaseline):
    name = "tp-hessian"
    description = "Torch-Pruning MetaPruner, global, GroupHessianImportance as shipped (sees only the last sample)"
    needs_data = True
    gradients = "per-sample"

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance()


class TorchPruningHessianFixed(TorchPruningHessian):
    name = "tp-hessian-fixed"
    description = "Torch-Pruning MetaPruner, global, GroupHessianImportance with its accumulation bug fixed"

    def importance(self) -> tp.importance.Importance:
        return CorrectedHessianImportance()


register_method(TorchPruningMagnitude())
register_method(TorchPruningTaylor())
register_method(TorchPruningHessian())
register_method(TorchPruningHessianFixed())
