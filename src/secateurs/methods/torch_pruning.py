"""Torch-Pruning's own pruners, as registered baselines: ``tp-magnitude``, ``tp-taylor``, ``tp-hessian``
and ``tp-hessian-fixed``.

Fang, Ma, Song, Mi, Wang, "DepGraph: Towards Any Structural Pruning", CVPR 2023,
https://arxiv.org/abs/2301.12900 — the library secateurs uses for channel coupling (1.6.1).

What runs is Torch-Pruning's pipeline, not ours: its importance classes score its groups
(``GroupMagnitudeImportance(p=2)``, ``GroupTaylorImportance``, ``GroupHessianImportance``, each with
its default mean group reduction), and its ``MetaPruner`` decides how many channels each group
loses. The policy maps onto Torch-Pruning's settings: ``normalized`` (the default, Torch-Pruning's
own default) is ``global_pruning=True`` with the importance's ``normalizer='mean'`` (option
``normalizer: l2`` passes a callable dividing by the L2 norm: Torch-Pruning has no ``l2`` name);
``global`` is ``global_pruning=True`` with ``normalizer=None``; ``layerwise`` is
``global_pruning=False``. Only the target is ours: for ``--target params`` (or ``macs``) the
``pruning_ratio`` handed to ``MetaPruner`` is bisected (`allocation.search.bisect`, the same search
as the channel allocator's) until the pruned model lands closest to the requested fraction (matched
parameter counts, counted by the same size model); ``--target channels`` passes ``sparsity`` as the
ratio. The importances are computed once on the unpruned model
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
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.allocation.search import bisect
from secateurs.config import PruneConfig
from secateurs.errors import StructureError
from secateurs.layers import filter_types
from secateurs.methods.base import PruneContext, register_method
from secateurs.methods.structured import ChannelChoice, Masks, StructuredPruning
from secateurs.scoring.base import ScoreContext
from secateurs.scoring.hessian import prepared_copy
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGraph, channel_graph, warnings_silenced
from secateurs.structure.pruners import custom_pruners

TorchPruningNormalizer = str | Callable[[torch.Tensor], torch.Tensor] | None
"""What Torch-Pruning's importances take as ``normalizer``: a name, a function, or None."""


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


def l2_normalized(importance: torch.Tensor) -> torch.Tensor:
    """A group's importance divided by its L2 norm (the ``l2`` normalizer, as a Torch-Pruning callable)."""
    return importance / importance.norm()


class TorchPruningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_layer_ratio: float = Field(0.95, gt=0, le=1)
    round_to: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    """Hessian only: per-sample gradients over this many calibration images (None: all)."""
    normalizer: Literal["mean", "l2"] = "mean"
    """Scope ``normalized``: the importance's normalizer (``mean``: Torch-Pruning's ``'mean'``)."""


class TorchPruningBaseline(StructuredPruning[TorchPruningOptions]):
    default_scope = "normalized"
    paper = "arXiv 2301.12900 (Torch-Pruning 1.6.1)"
    gradients: ClassVar[str] = "none"
    """``none``, ``mean`` (one backward of the mean loss) or ``per-sample`` (Hessian accumulation)."""

    @abstractmethod
    def importance(self, normalizer: TorchPruningNormalizer) -> tp.importance.Importance:
        """A fresh Torch-Pruning importance object normalising each group's scores with ``normalizer``."""

    def choose(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        sizes: SizeModel,
        config: PruneConfig,
        options: TorchPruningOptions,
        context: PruneContext,
    ) -> ChannelChoice:
        scope = self.scope(config)
        normalizer: TorchPruningNormalizer = None
        if scope == "normalized":
            normalizer = "mean" if options.normalizer == "mean" else l2_normalized
        started = time.perf_counter()
        by_root = self._importances(work, graph, normalizer, options, context)
        score_seconds = time.perf_counter() - started
        frozen = [work.get_submodule(root) for root in graph.frozen()]

        def removal(ratio: float) -> Masks:
            return self._meta_kept(work, graph, by_root, frozen, ratio, scope != "layerwise", options, context)

        def fraction(kept: Masks) -> float:
            return sizes.removed_fraction(kept, quantity=config.target)

        if config.target == "channels":
            ratio, kept = config.sparsity, removal(config.sparsity)
        else:
            ratio, kept = _search_ratio(removal, fraction, config.sparsity, options.max_layer_ratio, config.target)
        info = {
            "target": {"quantity": config.target, "sparsity": config.sparsity, "scope": scope},
            "scope": scope,
            "normalizer": options.normalizer if scope == "normalized" else None,
            "pruning_ratio": ratio,
            "importance": type(self.importance(normalizer)).__name__,
            "frozen": graph.frozen(),
        }
        return ChannelChoice(kept, {}, info, score_seconds)

    def _importances(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        normalizer: TorchPruningNormalizer,
        options: TorchPruningOptions,
        context: PruneContext,
    ) -> dict[str, torch.Tensor]:
        """Torch-Pruning's importance of every prunable group of ``work``, by root layer name."""
        scorer = self.importance(normalizer)
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
            for group in graph.graph.get_all_groups(root_module_types=filter_types()):
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
        options: TorchPruningOptions,
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

    def _meta_kept(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        by_root: dict[str, torch.Tensor],
        frozen: list[nn.Module],
        ratio: float,
        global_pruning: bool,
        options: TorchPruningOptions,
        context: PruneContext,
    ) -> Masks:
        """Keep-masks of the groups ``MetaPruner`` would prune at ``ratio`` (nothing is pruned; others keep all)."""
        names = {module: name for name, module in work.named_modules()}
        with warnings_silenced(), torch.enable_grad():
            pruner = tp.pruner.MetaPruner(
                work,
                context.example_inputs,
                importance=PrecomputedImportance(by_root, names),
                global_pruning=global_pruning,
                pruning_ratio=ratio,
                max_pruning_ratio=options.max_layer_ratio,
                ignored_layers=frozen,
                round_to=options.round_to,
                root_module_types=list(filter_types()),
                customized_pruners=custom_pruners(work),
            )
            chosen = list(pruner.step(interactive=True) or ())
        by_name = {g.root: g for g in graph.prunable()}
        kept = {}
        for group in chosen:
            root = names[group[0].dep.target.module]
            mask = torch.ones(by_name[root].channels, dtype=torch.bool)
            mask[list(group[0].idxs)] = False
            kept[root] = mask
        return kept


def _search_ratio(
    removal: Callable[[float], Masks], fraction: Callable[[Masks], float], target: float, cap: float, quantity: str
) -> tuple[float, Masks]:
    """The ``pruning_ratio`` in [0, cap) whose removal lands closest to ``target`` (and its keep-masks)."""
    low, high = 0.0, min(cap, 0.999)
    below = (low, removal(low))
    above = (high, removal(high))
    if fraction(above[1]) < target - 1e-9:
        # With round_to, Torch-Pruning's removal is not monotone in the ratio (at high ratios its
        # rounding can keep whole layers): look for the first ratio on a coarse grid that reaches it.
        reached = None
        seen = fraction(above[1])
        for index in range(1, 20):
            ratio = high * index / 20
            trial = (ratio, removal(ratio))
            seen = max(seen, fraction(trial[1]))
            if fraction(trial[1]) >= target:
                reached = trial
                break
            below = trial
        if reached is None:
            raise StructureError(
                f"Torch-Pruning cannot remove {target:.4f} of the {quantity}: at most {seen:.4f} "
                f"with max_pruning_ratio={cap}"
            )
        above = reached
    return bisect(removal, fraction, target, below, above, steps=30, resolution=1e-4)


class TorchPruningMagnitude(TorchPruningBaseline):
    name = "tp-magnitude"
    description = "Torch-Pruning MetaPruner, GroupMagnitudeImportance(p=2), at the target size"

    def importance(self, normalizer: TorchPruningNormalizer) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, normalizer=normalizer)


class TorchPruningTaylor(TorchPruningBaseline):
    name = "tp-taylor"
    description = "Torch-Pruning MetaPruner, GroupTaylorImportance, at the target size"
    needs_data = True
    gradients = "mean"

    def importance(self, normalizer: TorchPruningNormalizer) -> tp.importance.Importance:
        return tp.importance.GroupTaylorImportance(normalizer=normalizer)


class TorchPruningHessian(TorchPruningBaseline):
    name = "tp-hessian"
    description = "Torch-Pruning MetaPruner, GroupHessianImportance as shipped (sees only the last sample)"
    needs_data = True
    gradients = "per-sample"

    def importance(self, normalizer: TorchPruningNormalizer) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance(normalizer=normalizer)


class TorchPruningHessianFixed(TorchPruningHessian):
    name = "tp-hessian-fixed"
    description = "Torch-Pruning MetaPruner, GroupHessianImportance with its accumulation bug fixed"

    def importance(self, normalizer: TorchPruningNormalizer) -> tp.importance.Importance:
        return CorrectedHessianImportance(normalizer=normalizer)


register_method(TorchPruningMagnitude())
register_method(TorchPruningTaylor())
register_method(TorchPruningHessian())
register_method(TorchPruningHessianFixed())
