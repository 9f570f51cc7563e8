"""What a channel removal realised: the one report every structured method records.

``realised`` next to the requested target in ``method_info``: the fractions of parameters and MACs
removed, measured on the physically pruned model (not predicted), the fraction of prunable channels
removed, and the *channel ratio* (removed + implanted, HAP's r). ``params`` and ``macs`` are the
pruned model's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.metrics.counts import count_macs, count_params
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGroup


def realised_report(
    sizes: SizeModel,
    pruned: nn.Module,
    groups: Sequence[ChannelGroup],
    kept: Mapping[str, torch.Tensor],
    implanted: Mapping[str, torch.Tensor],
    input_shape: tuple[int, ...],
) -> dict[str, Any]:
    """``{"realised": {...}, "params": …, "macs": …}`` for ``pruned``, cut from the model ``sizes`` measured.

    ``groups`` are the prunable groups, ``kept`` their keep-masks per channel (absent: all kept) and
    ``implanted`` the kept channels that became implants. Counts ``pruned`` (one forward pass, no change).
    """
    total = sum(group.channels for group in groups)
    removed = sum(int((~kept[group.root]).sum()) for group in groups if group.root in kept)
    implants = sum(int(mask.sum()) for mask in implanted.values())
    params, macs = count_params(pruned), count_macs(pruned, input_shape)
    return {
        "realised": {
            "params_removed": 1.0 - params / sizes.original.params,
            "macs_removed": 1.0 - macs / sizes.original.macs,
            "channels_removed": removed / total if total else 0.0,
            "channel_ratio": (removed + implants) / total if total else 0.0,
        },
        "params": params,
        "macs": macs,
    }
