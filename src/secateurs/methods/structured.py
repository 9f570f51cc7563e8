"""Structured (channel) pruning: score channel groups, allocate, remove channels physically.

The shared pipeline of every ``kind = "structured"`` method of secateurs (``hap`` and its ablations,
``l1-filter``, ``l2-filter``, ``taylor``, ``random-channel``):

1. trace the model with Torch-Pruning's dependency graph into coupled channel groups
   (`structure.groups`; the final classifier's outputs and excluded layers are frozen);
2. score every channel of every prunable group (the subclass; timed into ``score_seconds``);
3. allocate (`structure.allocate`): global or layer-wise ranking with the per-layer cap
   ``max_layer_ratio`` (default 0.95), ``min_channels`` and ``round_to``; the target is
   ``PruneConfig.target`` — ``params`` or ``macs`` (the allocator searches the channel count that
   lands closest to ``sparsity``, counted exactly by `structure.costs.SizeModel`) or ``channels``
   (``sparsity`` is the fraction of prunable channels, HAP's ratio r). With ``latency_aware`` the
   allocation is `structure.latency_allocate` instead: widths on a grid (multiples of ``round_to``,
   or of `LATENCY_GRID` when ``round_to`` is 1), most importance kept per millisecond of a
   per-layer latency table (`structure.latency_table`, measured once per machine and cached), and
   option ``latency_target`` makes ``sparsity`` the fraction of the dense predicted latency removed;
4. build `plan.json` and replay it on a copy (`structure.surgery`): the returned model is physically
   smaller, and exactly what `load_run` rebuilds. The input model is not modified.

``info`` records the realised fractions of parameters, MACs and channels removed next to the target.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.allocation.channels import Allocation, AllocationConfig, GroupScores, fixed_channels, search
from secateurs.config import PruneConfig
from secateurs.errors import ConfigError, StructureError
from secateurs.latency.allocate import latency_allocation
from secateurs.latency.table import LatencyTable, layer_shapes, load_or_measure
from secateurs.methods.base import Method, PruneContext, PruneOutcome
from secateurs.metrics.counts import count_macs, count_params
from secateurs.sparsity.masks import baked_copy
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGraph, ChannelGroup, channel_graph
from secateurs.structure.plan import plan_of
from secateurs.structure.surgery import apply_plan, removal_plan

GRANULARITIES = ("element", "channel", "filter")
"""Accepted ``granularity`` values (structured methods always remove whole channels)."""


class ChannelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_layer_ratio: float = Field(0.95, gt=0, le=1)
    """Never remove more than this fraction of a layer's channels."""
    min_channels: int = Field(1, ge=1)
    """Never keep fewer channels than this in a layer."""
    round_to: int = Field(1, ge=1)
    """Keep channel counts in multiples of this where possible."""
    latency_aware: bool = False
    """Allocate by importance kept per millisecond on a per-layer latency table measured on this machine."""
    latency_target: bool = False
    """Latency-aware only: ``sparsity`` is the fraction of the dense predicted latency removed (not of --target)."""
    latency_batch: int = Field(256, ge=1)
    """Batch size the latency table is timed at."""
    latency_threads: int | None = Field(None, ge=1)
    """Threads the table is timed with (None: the process's torch thread count)."""
    latency_repeats: int = Field(5, ge=1)
    """Timed calls per grid point (the median is kept)."""
    latency_cache: str | None = None
    """Directory of cached tables (None: $SECATEURS_LATENCY_CACHE or ~/.cache/secateurs/latency-tables)."""
    latency_table: str | None = None
    """A table file to use instead of timing (it must match the model's layers)."""


Masks = dict[str, torch.Tensor]

LATENCY_GRID = 8
"""Width step of the latency table and the latency-aware allocation when ``round_to`` is 1."""


class ChannelPruning(Method):
    """Base of the structured methods: subclasses provide `channel_scores` (and may add implants)."""

    kind = "structured"
    default_scope: ClassVar[Literal["layerwise", "global"]] = "global"
    Options = ChannelOptions

    @abstractmethod
    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """One score per channel for each of ``groups`` (higher = kept first) and diagnostics."""

    def implants(
        self, groups: Sequence[ChannelGroup], specs: Sequence[GroupScores], chosen: Sequence[torch.Tensor], options: Any
    ) -> Masks:
        """Which of the chosen units become implants instead of being removed (none by default)."""
        return {}

    def apply(self, model: nn.Module, config: PruneConfig, options: Any, context: PruneContext) -> PruneOutcome:
        if config.granularity not in GRANULARITIES:
            raise ConfigError(
                f"method {self.name!r} removes whole channels; granularity {config.granularity!r} is not "
                f"accepted ({', '.join(GRANULARITIES)})"
            )
        check_latency_options(self.name, config, options)
        work = baked_copy(model)
        graph = channel_graph(work, context.example_inputs, exclude=config.exclude)
        groups = graph.prunable()
        if not groups:
            raise StructureError(f"{type(model).__name__} has no prunable channel group (frozen: {graph.frozen()})")
        started = time.perf_counter()
        scores, info = self.channel_scores(work, groups, options, context)
        score_seconds = time.perf_counter() - started
        specs = [GroupScores(g.root, g.unit_values(s), g.unit_sizes()) for g, s in zip(groups, scores, strict=True)]
        allocation_config = AllocationConfig(
            scope=self.scope(config),
            max_layer_ratio=options.max_layer_ratio,
            min_channels=max(options.min_channels, config.min_keep),
            round_to=options.round_to,
        )
        input_shape = tuple(context.example_inputs.shape[1:])
        sizes = SizeModel(graph, input_shape)

        def split(unit_masks: Sequence[torch.Tensor]) -> tuple[Masks, Masks]:
            chosen = {g.root: g.channels_of_units(m) for g, m in zip(groups, unit_masks, strict=True)}
            implanted = self.implants(groups, specs, unit_masks, options)
            removed = {root: mask & ~implanted.get(root, torch.zeros_like(mask)) for root, mask in chosen.items()}
            return removed, implanted

        def cost(unit_masks: list[torch.Tensor]) -> float:
            size = sizes.size(*split(unit_masks))
            kept, before = (
                (size.macs, sizes.original.macs) if config.target == "macs" else (size.params, sizes.original.params)
            )
            return 1.0 - kept / before

        allocation: Allocation
        if options.latency_aware:
            table, record = load_or_measure(
                layer_shapes(graph, input_shape)[0],
                batch=options.latency_batch,
                threads=options.latency_threads or torch.get_num_threads(),
                step=latency_step(options.round_to),
                repeats=options.latency_repeats,
                cache_dir=Path(options.latency_cache) if options.latency_cache else None,
                table_file=Path(options.latency_table) if options.latency_table else None,
            )
            allocation, info["latency_table"] = self._latency_allocation(
                specs, groups, table, config, options, allocation_config, cost
            )
            info["latency_table"].update(record)
        elif config.target == "channels":
            allocation = fixed_channels(specs, config.sparsity, allocation_config)
        else:
            allocation = search(specs, config.sparsity, allocation_config, cost, quantity=config.target)
        removed, implanted = split(allocation.masks)
        plan = removal_plan(
            graph.groups,
            removed,
            implanted,
            previous=plan_of(work),
            implant_init=getattr(options, "implant_init", "zero"),
        )
        pruned = apply_plan(work, plan, context.example_inputs)
        info.update(self._report(graph, groups, removed, implanted, pruned, sizes, config, options, input_shape))
        info.update(channel_record(groups, scores, removed, implanted))
        info["implanted_filters"] = sum(
            len(s["implanted"]) for s in plan["steps"][len(plan_of(work)) :] if s.get("kind") == "implant"
        )
        return PruneOutcome(model=pruned, plan=plan, info=info, score_seconds=score_seconds)

    def _latency_allocation(
        self,
        specs: Sequence[GroupScores],
        groups: Sequence[ChannelGroup],
        table: LatencyTable,
        config: PruneConfig,
        options: Any,
        allocation_config: AllocationConfig,
        cost: Callable[[list[torch.Tensor]], float],
    ) -> tuple[Allocation, dict[str, Any]]:
        """Importance per millisecond on ``table``; the target is latency, or ``config.target``."""
        roots = [g.root for g in groups]
        total_channels = sum(g.channels for g in groups)

        def latency(removed: list[int]) -> float:
            return table.total_ms(dict(zip(roots, removed, strict=True)))

        dense_ms = latency([0] * len(groups))
        quantity = "latency" if options.latency_target else config.target

        def fraction(unit_masks: list[torch.Tensor]) -> float:
            if quantity == "latency":
                removed = [int(s.sizes[m].sum()) for s, m in zip(specs, unit_masks, strict=True)]
                return 1.0 - latency(removed) / dense_ms
            if quantity == "channels":
                return sum(int(s.sizes[m].sum()) for s, m in zip(specs, unit_masks, strict=True)) / total_channels
            return cost(unit_masks)

        step = latency_step(options.round_to)
        allocation = latency_allocation(
            specs, config.sparsity, allocation_config, step=step, latency=latency, cost=fraction, quantity=quantity
        )
        removed = [int(s.sizes[m].sum()) for s, m in zip(specs, allocation.masks, strict=True)]
        predicted = latency(removed)
        return allocation, {
            "quantity": quantity,
            "step": step,
            "predicted_dense_ms": dense_ms,
            "predicted_ms": predicted,
            "predicted_speedup": dense_ms / predicted if predicted > 0 else None,
            "batch": options.latency_batch,
            "threads": table.key.get("threads"),
        }

    def _report(
        self,
        graph: ChannelGraph,
        groups: Sequence[ChannelGroup],
        removed: Masks,
        implanted: Masks,
        pruned: nn.Module,
        sizes: SizeModel,
        config: PruneConfig,
        options: Any,
        input_shape: tuple[int, ...],
    ) -> dict[str, Any]:
        total = sum(g.channels for g in groups)
        gone = sum(int(m.sum()) for m in removed.values())
        implants = sum(int(m.sum()) for m in implanted.values())
        params, macs = count_params(pruned), count_macs(pruned, input_shape)
        return {
            "target": {
                "quantity": "latency" if getattr(options, "latency_target", False) else config.target,
                "sparsity": config.sparsity,
                "scope": "latency-aware" if getattr(options, "latency_aware", False) else self.scope(config),
            },
            "realised": {
                "params_removed": 1.0 - params / sizes.original.params,
                "macs_removed": 1.0 - macs / sizes.original.macs,
                "channels_removed": gone / total if total else 0.0,
                "channel_ratio": (gone + implants) / total if total else 0.0,
            },
            "params": params,
            "macs": macs,
            "implanted_channels": implants,
            "groups": {
                g.root: {
                    "channels": g.channels,
                    "removed": int(removed[g.root].sum()),
                    "implanted": int(implanted[g.root].sum()) if g.root in implanted else 0,
                }
                for g in groups
            },
            "frozen": graph.frozen(),
            "untraced": graph.untraced,
        }


def channel_record(
    groups: Sequence[ChannelGroup], scores: Sequence[torch.Tensor], removed: Masks, implanted: Masks
) -> dict[str, Any]:
    """Per-channel scores, fates and HAP-style thresholds for the report's channel-sensitivity plot.

    ``channel_thresholds``: ``keep_above`` is the highest score of a channel that was not kept,
    ``implant_above`` the highest score of a removed channel when any were implanted (else None);
    ``channel_decisions`` (keep / implant / prune per channel) wins where caps or coupling overrode them.
    """
    record_scores: dict[str, list[float]] = {}
    decisions: dict[str, list[str]] = {}
    gone: list[float] = []
    implants: list[float] = []
    for group, channel_scores in zip(groups, scores, strict=True):
        values = [float(v) for v in channel_scores.detach().reshape(-1).to(torch.float64)]
        cut = removed[group.root].reshape(-1).tolist()
        kept_as_implant = implanted.get(group.root)
        planted = kept_as_implant.reshape(-1).tolist() if kept_as_implant is not None else [False] * len(values)
        record_scores[group.root] = values
        decisions[group.root] = [
            "prune" if c else "implant" if i else "keep" for c, i in zip(cut, planted, strict=True)
        ]
        gone += [v for v, c in zip(values, cut, strict=True) if c]
        implants += [v for v, i in zip(values, planted, strict=True) if i]
    not_kept = gone + implants
    return {
        "channel_scores": record_scores,
        "channel_thresholds": {
            "keep_above": max(not_kept) if not_kept else None,
            "implant_above": (max(gone) if gone else None) if implants else None,
        },
        "channel_decisions": decisions,
    }


def latency_step(round_to: int) -> int:
    """The latency-aware width grid: ``round_to``, or `LATENCY_GRID` when it is 1."""
    return round_to if round_to > 1 else LATENCY_GRID


def check_latency_options(method: str, config: PruneConfig, options: Any) -> None:
    """`ConfigError` for option combinations the latency-aware allocation cannot honour."""
    if options.latency_target and not options.latency_aware:
        raise ConfigError(f"method {method!r}: option latency_target=true needs latency_aware=true")
    if options.latency_aware and getattr(options, "implant_ratio", 0.0) > 0:
        raise ConfigError(
            f"method {method!r}: latency_aware does not price implants; use implant_ratio=0 or latency_aware=false"
        )
    if options.latency_aware and config.scope == "layerwise":
        raise ConfigError(
            f"method {method!r}: latency_aware allocates across layers (one ranking by importance per millisecond); "
            "scope 'layerwise' is not accepted with it"
        )
