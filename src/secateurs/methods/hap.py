"""HAP — Hessian-Aware Pruning and Optimal Neural Implant.

Yu, Yao, Gholami, Dong, Kim, Mahoney, Keutzer, WACV 2022, https://arxiv.org/abs/2101.08940
(specified in METHODS.md §2).

Summary: each output channel c of every Conv2d/Linear layer gets the second-order sensitivity
S_c = Tr(H_cc)/n_c · ‖w_c‖² ("relative Hessian trace" times the channel's squared norm), with the
trace of the channel's diagonal Hessian block estimated by Hutchinson's method (`scoring.hessian`:
Rademacher probes, one HVP per probe, model in eval mode, conv/linear weights only, a fixed set of
calibration images). Channels are ranked globally and the least sensitive ones are removed
physically. With ``implant_ratio`` ρ, the most sensitive ρ share of the channels HAP would remove is
kept instead, its k×k filter replaced by a zero-initialised, trainable 1×1 convolution
(`structure.implant`). Ablations: ``hap-raw`` (S_c = Tr(H_cc)) and ``hap-nonorm`` (Tr·‖w‖², no /n_c).

Deliberate deviations from the paper's code (METHODS.md §2.5):

* **Coupling**: channels tied by residual additions are one group scored by the *sum* of its
  filters' scores and removed together (ARCHITECTURE.md), instead of the code's union rule where each
  conv keeps its own channels and residual sums are zero-filled.
* **Units of r**: ``--target channels`` counts coupled channels (a residual stream of 16 channels
  shared by 7 convolutions counts 16); the default target is parameters, searched exactly.
* **Sign policy** (``negative``): Tr(H_cc) ≥ 0 at a minimum, so negative estimates are noise or a
  non-minimum; by default ``abs`` ranks them by |estimate| (``clip`` sets them to 0, ``keep`` leaves
  them negative so they go first, as the code does). The count is recorded.
* **Probes**: ≤ 100 with early stopping and the standard error recorded (the code runs 3).
* **Implant mode**: the 95 % per-layer cap is applied to removed + implanted channels (the code's
  inverted check is not reproduced, §2.5 item 10); Linear layers stay in the ranking (the code drops
  them in implant mode) but never take implants; implants go to the channels of the ρ share with the
  highest scores among layers whose filters are all plain Conv2d. Implants are zero-initialised
  including their bias (when the layer has one); ``implant_init: centre`` starts them from the
  centre tap of the replaced kernel instead (the code's unused alternative). Found here: a
  zero-initialised implant followed by batch norm and ReLU gets no gradient in training mode when
  the channel's BN bias β ≤ 0 (BN maps the all-zero channel to β, and ReLU's gradient at β ≤ 0 is
  0), so such implants stay zero; implants on residual streams (BN output + shortcut) do train.
* **Data**: the first ``--calibration`` training images (512 by default), normalised, un-augmented;
  selection and reporting use the validation split, not the test set.

``trace_cache`` (a directory, off by default) memoises the Hutchinson estimates under a hash of the
weights, the data, the probe settings and the generator state, so several prunings of one dense model
(ratios, implant shares, ablations) estimate the traces once; the run records whether it hit.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from secateurs.allocation.channels import GroupScores
from secateurs.io.files import atomic_write_json, load_tensors, read_json, save_tensors
from secateurs.methods.base import PruneContext, register_method
from secateurs.methods.structured import ChannelOptions, ChannelPruning, Masks
from secateurs.scoring.base import ScoreContext
from secateurs.scoring.hessian import ChannelTraces, HutchinsonConfig, hutchinson_channel_traces
from secateurs.structure.groups import ChannelGroup, Member, channel_sums, layouts, member_slices
from secateurs.structure.implant import ImplantedConv2d
from secateurs.structure.surgery import implantable

log = logging.getLogger(__name__)


class HapOptions(ChannelOptions):
    probes: int = Field(100, ge=1)
    """Maximum Rademacher probes (one HVP each)."""
    min_probes: int = Field(10, ge=2)
    tolerance: float = Field(1e-3, ge=0)
    """Stop when the relative change of the per-channel estimates falls under this."""
    negative: Literal["abs", "clip", "keep"] = "abs"
    """What to do with negative trace estimates (see the module docstring)."""
    implant_ratio: float = Field(0.0, ge=0, lt=1)
    """ρ: share of the channels HAP would remove that become 1×1 implants instead."""
    implant_init: Literal["zero", "centre"] = "zero"
    """How implants start: zero (the paper) or the centre tap of the replaced kernel."""
    trace_cache: str | None = None
    """Directory memoising trace estimates (content-hashed); None: off."""


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


def member_traces(member: Member, traces: dict[str, torch.Tensor], per_entry: bool) -> torch.Tensor:
    """Trace estimates (or, with ``per_entry``, parameter counts n_c) of a member's output channels."""
    module = member.module
    if isinstance(module, ImplantedConv2d):
        if per_entry:
            kept = torch.full((module.kept.out_channels,), float(module.kept.weight[0].numel()), dtype=torch.float64)
            small = torch.full(
                (module.implant.out_channels,), float(module.implant.weight[0].numel()), dtype=torch.float64
            )
        else:
            kept, small = traces[f"{member.name}.kept"], traces[f"{member.name}.implant"]
        return torch.cat([kept, small]).index_select(0, module.order)[member.indices]
    if per_entry:
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        return torch.full((len(member.indices),), float(weight[0].numel()), dtype=torch.float64)
    return traces[member.name][member.indices]


class Hap(ChannelPruning):
    name = "hap"
    description = (
        "Hessian-aware channel pruning: Tr(H_cc)/n_c·‖w_c‖² by Hutchinson, global; implant_ratio for 1×1 implants"
    )
    paper = "arXiv 2101.08940"
    needs_data = True
    Options = HapOptions
    normalize: ClassVar[bool] = True
    weight: ClassVar[bool] = True

    def channel_scores(
        self, model: nn.Module, groups: Sequence[ChannelGroup], options: Any, context: PruneContext
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        batches = ScoreContext(context.generator, batches=context.batches).require_batches(self.name)
        config = HutchinsonConfig(options.probes, min(options.min_probes, options.probes), options.tolerance)
        traces, cache = cached_traces(model, batches, context, config, options.trace_cache)
        weights = layouts(groups)
        scores, negative = [], 0
        for group in groups:
            parts = []
            for member, rows in member_slices(group, weights):
                estimate = member_traces(member, traces.traces, per_entry=False)
                negative += int((estimate < 0).sum())
                parts.append(
                    (
                        member,
                        sensitivity(
                            signed(estimate, options.negative),
                            member_traces(member, traces.traces, per_entry=True),
                            rows.detach().to(torch.float64).pow(2).sum(1),
                            normalize=self.normalize,
                            weight=self.weight,
                        ),
                    )
                )
            scores.append(channel_sums(group, parts))
        relative = torch.cat(
            [
                (e / t.abs().clamp_min(1e-30))
                for t, e in zip(traces.traces.values(), traces.standard_errors.values(), strict=True)
            ]
        )
        info = {
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
        }
        return scores, info

    def implants(
        self, groups: Sequence[ChannelGroup], specs: Sequence[GroupScores], chosen: Sequence[torch.Tensor], options: Any
    ) -> Masks:
        """The most sensitive ρ share (by channel count) of the chosen units, in implantable groups."""
        if options.implant_ratio <= 0:
            return {}
        total = sum(int(spec.sizes[mask].sum()) for spec, mask in zip(specs, chosen, strict=True))
        budget = math.floor(options.implant_ratio * total + 1e-9)
        candidates = []
        for index, (group, spec, mask) in enumerate(zip(groups, specs, chosen, strict=True)):
            if implantable(group):
                candidates += [(float(spec.scores[u]), index, u) for u in torch.nonzero(mask).reshape(-1).tolist()]
        candidates.sort(key=lambda c: -c[0])
        result: Masks = {}
        used = 0
        for _, index, unit in candidates:
            size = int(specs[index].sizes[unit])
            if used + size > budget:
                continue
            used += size
            group = groups[index]
            mask = result.setdefault(group.root, torch.zeros(group.channels, dtype=torch.bool))
            mask |= group.units == unit
        return result


class HapRaw(Hap):
    name = "hap-raw"
    description = "HAP ablation: raw Hutchinson trace Tr(H_cc) per channel"
    normalize = False
    weight = False


class HapNoNorm(Hap):
    name = "hap-nonorm"
    description = "HAP ablation: Tr(H_cc)·‖w_c‖² without the /n_c normalisation"
    normalize = False
    weight = True


def cached_traces(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    context: PruneContext,
    config: HutchinsonConfig,
    directory: str | None,
) -> tuple[ChannelTraces, str]:
    """Hutchinson traces, memoised in ``directory`` under a content hash when it is set."""
    if directory is None:
        return hutchinson_channel_traces(model, batches, context.loss_fn, context.generator, config), "off"
    key = _cache_key(model, batches, config, context.generator, context.loss_fn)
    path = Path(directory) / f"{key}.safetensors"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        tensors = load_tensors(path, "trace cache")
        record = read_json(meta, "trace cache record")
        context.generator.set_state(tensors.pop("__generator__").to(torch.uint8))
        traces = {k.removeprefix("trace:"): v for k, v in tensors.items() if k.startswith("trace:")}
        errors = {k.removeprefix("error:"): v for k, v in tensors.items() if k.startswith("error:")}
        return (
            ChannelTraces(
                traces, errors, record["probes"], record["seconds"], record["hvp_seconds"], record["changes"]
            ),
            "hit",
        )
    result = hutchinson_channel_traces(model, batches, context.loss_fn, context.generator, config)
    Path(directory).mkdir(parents=True, exist_ok=True)
    tensors = {f"trace:{k}": v for k, v in result.traces.items()}
    tensors.update({f"error:{k}": v for k, v in result.standard_errors.items()})
    tensors["__generator__"] = context.generator.get_state()
    save_tensors(path, tensors)
    atomic_write_json(
        meta,
        {
            "probes": result.probes,
            "seconds": result.seconds,
            "hvp_seconds": result.hvp_seconds,
            "changes": result.changes,
        },
    )
    return result, "miss"


def _cache_key(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: HutchinsonConfig,
    generator: torch.Generator,
    loss_fn: object,
) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for inputs, targets in batches:
        digest.update(inputs.detach().cpu().contiguous().numpy().tobytes())
        digest.update(targets.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(config).encode())
    digest.update(getattr(loss_fn, "__qualname__", repr(loss_fn)).encode())
    digest.update(generator.get_state().numpy().tobytes())
    return digest.hexdigest()[:32]


register_method(Hap())
register_method(HapRaw())
register_method(HapNoNorm())
