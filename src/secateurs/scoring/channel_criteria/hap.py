"""``hap``, ``hap-raw``, ``hap-nonorm``: HAP's second-order channel sensitivity (Yu, Yao, Gholami,
Dong, Kim, Mahoney, Keutzer, WACV 2022, https://arxiv.org/abs/2101.08940; METHODS.md §2.1).

S_c = Tr(H_cc)/n_c · ‖w_c‖² for output channel c of a filter ("relative Hessian trace" × the
channel's squared norm), with Tr(H_cc) of the channel's diagonal Hessian block estimated by
Hutchinson's method (`scoring.hessian`: Rademacher probes, one HVP per probe, eval mode, conv/linear
weights only, the calibration batches) and n_c the parameters of the channel's filter
(`channel_view.row_entries`: C_in·k·k, C_in for a 1×1 implant). Ablations: ``hap-raw`` ranks Tr(H_cc),
``hap-nonorm`` Tr(H_cc)·‖w_c‖². A group's score is the sum over its filters.

Sign policy (``negative``): Tr(H_cc) ≥ 0 at a minimum, so negative estimates are noise or a
non-minimum; ``abs`` (default) ranks them by |estimate|, ``clip`` sets them to 0, ``keep`` leaves them
negative (they go first, as the paper's code does). The count is in the diagnostics. ``trace_cache``
memoises the estimates (`scoring.trace_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.scoring.channel_criteria.base import ChannelContext, ChannelScores, register_channel_scorer
from secateurs.scoring.hessian import HutchinsonConfig
from secateurs.scoring.trace_cache import cached_traces
from secateurs.structure.channel_view import channel_sums, layouts, member_slices, out_values, row_entries
from secateurs.structure.groups import ChannelGroup


class HessianTraceOptions(BaseModel):
    """How the Hutchinson traces of the HAP criteria are estimated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probes: int = Field(100, ge=1)
    """Maximum Rademacher probes (one HVP each)."""
    min_probes: int = Field(10, ge=2)
    tolerance: float = Field(1e-3, ge=0)
    """Stop when the relative change of the per-channel estimates falls under this."""
    negative: Literal["abs", "clip", "keep"] = "abs"
    """What to do with negative trace estimates (see the module docstring)."""
    trace_cache: str | None = None
    """Directory memoising trace estimates (content-hashed); None: off."""
    hvp_engine: Literal[
        "auto", "double-backward", "double-backward-rewritten", "forward-over-reverse", "finite-difference"
    ] = "auto"
    """How Hessian-vector products are computed (`scoring.hvp`); ``auto`` falls back per model."""
    probe_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """The probe stream's own seed, independent of the run seed (`hessian.probe_stream_base`; runs
    with different ``probes`` draw disjoint streams). None: derived from the run's generator."""


def sensitivity(
    traces: torch.Tensor, sizes: torch.Tensor, squared_norms: torch.Tensor, *, normalize: bool, weight: bool
) -> torch.Tensor:
    """HAP's channel score: Tr (raw), Tr·‖w‖² (no normalisation) or Tr/n·‖w‖² (both)."""
    score = traces / sizes if normalize else traces.clone()
    return score * squared_norms if weight else score


def signed(traces: torch.Tensor, policy: str) -> torch.Tensor:
    """Apply the sign policy to trace estimates: ``abs``, ``clip`` (at 0) or ``keep``."""
    if policy == "abs":
        return traces.abs()
    if policy == "clip":
        return traces.clamp_min(0.0)
    return traces


def hap_scores(
    name: str,
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    context: ChannelContext[HessianTraceOptions],
    *,
    normalize: bool,
    weight: bool,
) -> ChannelScores:
    """The HAP scores (``normalize``: divide by n_c; ``weight``: multiply by ‖w_c‖²) and diagnostics."""
    options = context.options
    batches = context.require_batches(name)
    config = HutchinsonConfig(
        options.probes,
        min(options.min_probes, options.probes),
        options.tolerance,
        engine=options.hvp_engine,
        probe_seed=options.probe_seed,
    )
    traces, cache = cached_traces(model, batches, context.loss_fn, context.generator, config, options.trace_cache)
    weights = layouts(groups)
    scores, negative = [], 0
    for group in groups:
        parts = []
        for member, rows in member_slices(group, weights):
            estimate = out_values(member, traces.traces)
            negative += int((estimate < 0).sum())
            score = sensitivity(
                signed(estimate, options.negative),
                row_entries(member),
                rows.detach().to(torch.float64).pow(2).sum(1),
                normalize=normalize,
                weight=weight,
            )
            parts.append((member, score))
        scores.append(channel_sums(group, parts))
    relative = torch.cat(
        [
            (e / t.abs().clamp_min(1e-30))
            for t, e in zip(traces.traces.values(), traces.standard_errors.values(), strict=True)
        ]
    )
    diagnostics: dict[str, Any] = {
        "probes": traces.probes,
        "calibration_images": sum(len(t) for _, t in batches),
        "trace_relative_standard_error": {
            "median": float(relative.median()),
            "mean": float(relative[torch.isfinite(relative)].mean()),
        },
        "negative_traces": negative,
        "negative_policy": options.negative,
        "hutchinson_seconds": traces.seconds,
        "hvp_seconds": traces.hvp_seconds,
        "last_relative_change": traces.changes[-1] if traces.changes else None,
        "trace_cache": cache,
        "hvp_engine": traces.engine,
        "hvp_engine_reason": traces.engine_reason,
        "probe_seed": traces.probe_seed,
    }
    return ChannelScores(scores, diagnostics)


@register_channel_scorer(
    "hap", description="HAP: Tr(H_cc)/n_c·‖w_c‖², Hutchinson traces", needs_data=True, options=HessianTraceOptions
)
def hap(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[HessianTraceOptions]
) -> ChannelScores:
    return hap_scores("hap", model, groups, context, normalize=True, weight=True)


@register_channel_scorer(
    "hap-raw", description="HAP ablation: raw trace Tr(H_cc)", needs_data=True, options=HessianTraceOptions
)
def hap_raw(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[HessianTraceOptions]
) -> ChannelScores:
    return hap_scores("hap-raw", model, groups, context, normalize=False, weight=False)


@register_channel_scorer(
    "hap-nonorm", description="HAP ablation: Tr(H_cc)·‖w_c‖², no /n_c", needs_data=True, options=HessianTraceOptions
)
def hap_nonorm(
    model: nn.Module, groups: Sequence[ChannelGroup], context: ChannelContext[HessianTraceOptions]
) -> ChannelScores:
    return hap_scores("hap-nonorm", model, groups, context, normalize=False, weight=True)
