"""HAP — Hessian-Aware Pruning and Optimal Neural Implant.

Yu, Yao, Gholami, Dong, Kim, Mahoney, Keutzer, WACV 2022, https://arxiv.org/abs/2101.08940
(specified in METHODS.md §2).

Summary: each output channel c of every Conv2d/Linear layer gets the second-order sensitivity
S_c = Tr(H_cc)/n_c · ‖w_c‖² ("relative Hessian trace" times the channel's squared norm), with the
trace of the channel's diagonal Hessian block estimated by Hutchinson's method (the channel
criterion ``hap``, `scoring.channel_criteria.hap`: Rademacher probes, one HVP per probe, model in
eval mode, conv/linear weights only, a fixed set of calibration images). Channels are ranked
globally (``--scope normalized`` or ``layerwise`` also work) and the least sensitive ones are removed
physically. With ``implant_ratio`` ρ, the most sensitive ρ share of the channels HAP would remove is
kept instead, its k×k filter replaced by a zero-initialised, trainable 1×1 convolution
(`structure.implant`). Ablations: ``hap-raw`` (S_c = Tr(H_cc)) and ``hap-nonorm`` (Tr·‖w‖², no /n_c),
the criteria of the same names.

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
weights, the data, the probe settings and the generator state (`scoring.trace_cache`), so several
prunings of one dense model (ratios, implant shares, ablations) estimate the traces once; the run
records whether it hit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from secateurs.allocation.channels import GroupScores
from secateurs.methods.base import register_method
from secateurs.methods.channel_pruning import ChannelOptions, ChannelPruning
from secateurs.methods.structured import Masks
from secateurs.scoring.channel_criteria.hap import HessianTraceOptions
from secateurs.structure.groups import ChannelGroup
from secateurs.structure.surgery import implantable


class HapOptions(ChannelOptions, HessianTraceOptions):
    """The allocation options, the trace options of the ``hap`` criteria, and the implants."""

    implant_ratio: float = Field(0.0, ge=0, lt=1)
    """ρ: share of the channels HAP would remove that become 1×1 implants instead."""
    implant_init: Literal["zero", "centre"] = "zero"
    """How implants start: zero (the paper) or the centre tap of the replaced kernel."""


class Hap(ChannelPruning[HapOptions]):
    name = "hap"
    description = (
        "Hessian-aware channel pruning: Tr(H_cc)/n_c·‖w_c‖² by Hutchinson, global; implant_ratio for 1×1 implants"
    )
    paper = "arXiv 2101.08940"
    needs_data = True
    criterion = "hap"

    def implanting(self, options: HapOptions) -> bool:
        return options.implant_ratio > 0

    def implant_init(self, options: HapOptions) -> str:
        return options.implant_init

    def implants(
        self,
        groups: Sequence[ChannelGroup],
        specs: Sequence[GroupScores],
        kept: Sequence[torch.Tensor],
        options: HapOptions,
    ) -> Masks:
        """The most sensitive ρ share (by channel count) of the removed units, in implantable groups."""
        if options.implant_ratio <= 0:
            return {}
        total = sum(int(spec.sizes[~mask].sum()) for spec, mask in zip(specs, kept, strict=True))
        budget = math.floor(options.implant_ratio * total + 1e-9)
        candidates = []
        for index, (group, spec, mask) in enumerate(zip(groups, specs, kept, strict=True)):
            if implantable(group):
                candidates += [(float(spec.scores[u]), index, u) for u in torch.nonzero(~mask).reshape(-1).tolist()]
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
    criterion = "hap-raw"


class HapNoNorm(Hap):
    name = "hap-nonorm"
    description = "HAP ablation: Tr(H_cc)·‖w_c‖² without the /n_c normalisation"
    criterion = "hap-nonorm"


register_method(Hap())
register_method(HapRaw())
register_method(HapNoNorm())
