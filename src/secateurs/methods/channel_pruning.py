"""`ChannelPruning`: a channel criterion, an allocation policy and caps, at an exact target.

secateurs' own structured methods (``hap`` and its ablations, ``l1-filter``, ``l2-filter``,
``taylor``, ``random-channel``) are each a channel criterion (`scoring.channel_criteria`, by name)
plus a default policy plus options, run through `StructuredPruning` (trace, plan, replay, report):

1. score every channel of every prunable group with the criterion (timed into ``score_seconds``);
2. allocate (`allocation.channels`) under the policy ``scope``: ``global`` (one ranking), ``layerwise``
   (the same fraction of every group) or ``normalized`` (each group's scores divided by their mean or
   L2 norm, option ``normalizer``, then one ranking), with the per-layer cap ``max_layer_ratio``
   (default 0.95), ``min_channels`` and ``round_to``; the target is ``PruneConfig.target`` —
   ``params`` or ``macs`` (the allocator bisects the channel count that lands closest to
   ``sparsity``, counted exactly by `structure.costs.SizeModel`) or ``channels`` (``sparsity`` is the
   fraction of prunable channels, HAP's ratio r). With ``latency_aware`` the allocation is
   `latency.allocate` instead: widths on a grid (multiples of ``round_to``, or of `LATENCY_GRID`
   when ``round_to`` is 1), most importance kept per millisecond of a per-layer latency table
   (`latency.table`, measured once per machine and cached), and option ``latency_target`` makes
   ``sparsity`` the fraction of the dense predicted latency removed;
3. a subclass may turn some of the channels the allocation removes into implants (HAP).

``info`` adds the criterion's diagnostics, the per-group outcome and every channel's score and fate
(`channel_record`). Every mask is per group channel (or unit), True = keep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.allocation.channels import (
    Allocation,
    AllocationConfig,
    GroupScores,
    fixed_channels,
    ranked,
    removed_channels,
    search,
)
from secateurs.config import PruneConfig
from secateurs.config.prune import Scope
from secateurs.errors import ConfigError, StructureError
from secateurs.latency.allocate import latency_allocation
from secateurs.latency.table import layer_shapes, load_or_measure
from secateurs.methods.base import PruneContext
from secateurs.methods.structured import ChannelChoice, Masks, StructuredPruning
from secateurs.scoring.channel_criteria import CHANNEL_SCORERS
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGraph, ChannelGroup

GRANULARITIES = ("element", "channel", "filter")
"""Accepted ``granularity`` values (structured methods always remove whole channels)."""

LATENCY_GRID = 8
"""Width step of the latency table and the latency-aware allocation when ``round_to`` is 1."""


class ChannelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_layer_ratio: float = Field(0.95, gt=0, le=1)
    """Never remove more than this fraction of a layer's channels."""
    min_channels: int = Field(1, ge=1)
    """Never keep fewer channels than this in a layer."""
    round_to: int = Field(1, ge=1)
    """Keep channel counts in multiples of this where possible."""
    normalizer: Literal["mean", "l2"] = "mean"
    """Scope ``normalized``: divide each group's scores by their mean (Torch-Pruning's default) or L2 norm."""
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


ChannelOptionsT = TypeVar("ChannelOptionsT", bound=ChannelOptions)


class ChannelPruning(StructuredPruning[ChannelOptionsT]):
    """Channel criterion ``criterion`` + allocation policy + caps: the structured methods of secateurs."""

    criterion: ClassVar[str]
    """The registered channel criterion (`scoring.channel_criteria.CHANNEL_SCORERS`) that scores channels."""
    default_scope: ClassVar[Scope] = "global"

    def implants(
        self,
        groups: Sequence[ChannelGroup],
        specs: Sequence[GroupScores],
        kept: Sequence[torch.Tensor],
        options: ChannelOptionsT,
    ) -> Masks:
        """Which units the allocation removes (``kept`` false, per unit) become implants instead (none here).

        ``specs`` hold the scores the allocation policy ranks (normalized per group for ``normalized``).
        Returns implant masks per group channel; mutates nothing.
        """
        return {}

    def implanting(self, options: ChannelOptionsT) -> bool:
        """Whether these options turn removed channels into implants."""
        return False

    def implant_init(self, options: ChannelOptionsT) -> str:
        """How implants start (`ImplantedConv2d.from_conv`)."""
        return "zero"

    def check_request(self, config: PruneConfig, options: ChannelOptionsT) -> None:
        if config.granularity not in GRANULARITIES:
            raise ConfigError(
                f"method {self.name!r} removes whole channels; granularity {config.granularity!r} is not "
                f"accepted ({', '.join(GRANULARITIES)})"
            )
        if options.latency_target and not options.latency_aware:
            raise ConfigError(f"method {self.name!r}: option latency_target=true needs latency_aware=true")
        if options.latency_aware and self.implanting(options):
            raise ConfigError(
                f"method {self.name!r}: latency_aware does not price implants; use implant_ratio=0 or "
                "latency_aware=false"
            )
        if options.latency_aware and config.scope == "layerwise":
            raise ConfigError(
                f"method {self.name!r}: latency_aware allocates across layers (one ranking by importance per "
                "millisecond); scope 'layerwise' is not accepted with it"
            )

    def choose(
        self,
        work: nn.Module,
        graph: ChannelGraph,
        sizes: SizeModel,
        config: PruneConfig,
        options: ChannelOptionsT,
        context: PruneContext,
    ) -> ChannelChoice:
        groups = graph.prunable()
        if not groups:
            raise StructureError(f"{type(work).__name__} has no prunable channel group (frozen: {graph.frozen()})")
        started = time.perf_counter()
        scored = CHANNEL_SCORERS.get(self.criterion).score(
            work,
            groups,
            options,
            generator=context.generator,
            batches=context.batches,
            loss_fn=context.loss_fn,
            example_inputs=context.example_inputs,
        )
        score_seconds = time.perf_counter() - started
        info = dict(scored.diagnostics)
        specs = [
            GroupScores(g.root, g.unit_values(s), g.unit_sizes()) for g, s in zip(groups, scored.scores, strict=True)
        ]
        scope = self.scope(config)
        allocation_config = AllocationConfig(
            scope=scope,
            max_layer_ratio=options.max_layer_ratio,
            min_channels=max(options.min_channels, config.min_keep),
            round_to=options.round_to,
            normalizer=options.normalizer,
        )

        policy_specs = ranked(specs, allocation_config)  # the scores the policy compares (implants too)

        def split(kept_units: Sequence[torch.Tensor]) -> tuple[Masks, Masks]:
            """Per-channel keep-masks (implants kept) and implant masks from per-unit keep-masks."""
            kept = {g.root: g.channels_of_units(m) for g, m in zip(groups, kept_units, strict=True)}
            implanted = self.implants(groups, policy_specs, kept_units, options)
            return {root: mask | implanted.get(root, torch.zeros_like(mask)) for root, mask in kept.items()}, implanted

        def cost(kept_units: list[torch.Tensor]) -> float:
            return sizes.removed_fraction(*split(kept_units), quantity=config.target)

        allocation: Allocation
        if options.latency_aware:
            allocation, info["latency_table"] = self._latency_allocation(
                policy_specs, graph, config, options, allocation_config, cost, context
            )
        elif config.target == "channels":
            allocation = fixed_channels(specs, config.sparsity, allocation_config)
        else:
            allocation = search(specs, config.sparsity, allocation_config, cost, quantity=config.target)
        kept, implanted = split(allocation.kept)
        info.update(
            {
                "target": {
                    "quantity": "latency" if options.latency_target else config.target,
                    "sparsity": config.sparsity,
                    "scope": "latency-aware" if options.latency_aware else scope,
                },
                "scope": scope,
                "normalizer": options.normalizer if scope == "normalized" else None,
                "criterion": self.criterion,
                "implanted_channels": sum(int(m.sum()) for m in implanted.values()),
                "groups": {
                    g.root: {
                        "channels": g.channels,
                        "removed": int((~kept[g.root]).sum()),
                        "implanted": int(implanted[g.root].sum()) if g.root in implanted else 0,
                    }
                    for g in groups
                },
                "frozen": graph.frozen(),
                "untraced": graph.untraced,
            }
        )
        info.update(channel_record(groups, scored.scores, kept, implanted))
        return ChannelChoice(kept, implanted, info, score_seconds, self.implant_init(options))

    def _latency_allocation(
        self,
        specs: Sequence[GroupScores],
        graph: ChannelGraph,
        config: PruneConfig,
        options: ChannelOptionsT,
        allocation_config: AllocationConfig,
        cost: Callable[[list[torch.Tensor]], float],
        context: PruneContext,
    ) -> tuple[Allocation, dict[str, Any]]:
        """Importance per millisecond on this machine's latency table (measured, or read from the
        cache or ``latency_table``); the target is latency, or ``config.target``. Returns the
        allocation and the record for ``info["latency_table"]``."""
        table, record = load_or_measure(
            layer_shapes(graph, tuple(context.example_inputs.shape[1:]))[0],
            batch=options.latency_batch,
            threads=options.latency_threads or torch.get_num_threads(),
            step=latency_step(options.round_to),
            repeats=options.latency_repeats,
            cache_dir=Path(options.latency_cache) if options.latency_cache else None,
            table_file=Path(options.latency_table) if options.latency_table else None,
        )
        groups = graph.prunable()
        roots = [g.root for g in groups]
        total_channels = sum(g.channels for g in groups)

        def latency(removed: list[int]) -> float:
            return table.total_ms(dict(zip(roots, removed, strict=True)))

        dense_ms = latency([0] * len(groups))
        quantity = "latency" if options.latency_target else config.target

        def removed_per_group(kept_units: list[torch.Tensor]) -> list[int]:
            return [int(s.sizes[~m].sum()) for s, m in zip(specs, kept_units, strict=True)]

        def fraction(kept_units: list[torch.Tensor]) -> float:
            if quantity == "latency":
                return 1.0 - latency(removed_per_group(kept_units)) / dense_ms
            if quantity == "channels":
                return removed_channels(specs, kept_units) / total_channels
            return cost(kept_units)

        step = latency_step(options.round_to)
        allocation = latency_allocation(
            specs, config.sparsity, allocation_config, step=step, latency=latency, cost=fraction, quantity=quantity
        )
        predicted = latency(removed_per_group(allocation.kept))
        return allocation, {
            "quantity": quantity,
            "step": step,
            "predicted_dense_ms": dense_ms,
            "predicted_ms": predicted,
            "predicted_speedup": dense_ms / predicted if predicted > 0 else None,
            "batch": options.latency_batch,
            "threads": table.key.get("threads"),
            **record,
        }


def channel_record(
    groups: Sequence[ChannelGroup], scores: Sequence[torch.Tensor], kept: Masks, implanted: Masks
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
        cut = (~kept[group.root]).reshape(-1).tolist()
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
