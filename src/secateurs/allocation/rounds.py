"""The fixed-fraction rule of iterative pruning (lottery-ticket style): pure masks in, masks out.

After t rounds that each remove a fraction r of the survivors, a tensor that started the method with
a_l surviving entries keeps a_l · (1 − r)^t of them (layer-wise), or the model keeps Σ a_l · (1 − r)^t
(global). Targets are expressed as fractions of each tensor's total entries, as `select` expects,
and computed from the starting survivors, so rounding never accumulates over rounds. SAP's adaptive
rule lives in `sparsity/pq_index.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from secateurs.allocation.elements import select
from secateurs.sparsity.granularity import Granularity


def fixed_fraction_masks(
    magnitudes: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    start_alive: Mapping[str, int],
    keep: float,
    granularity: Granularity,
    *,
    scope: str = "layerwise",
    min_keep: int = 1,
) -> dict[str, torch.Tensor]:
    """Keep-masks keeping ``keep`` of the starting survivors (largest magnitude first).

    ``keep`` is (1 − r)^t; removed entries (``alive`` false) never come back.
    """
    if scope == "global":
        total = sum(mask.numel() for mask in alive.values())
        target: float | dict[str, float] = 1.0 - keep * sum(start_alive.values()) / total
    else:
        target = {name: 1.0 - keep * start_alive[name] / alive[name].numel() for name in magnitudes}
    chosen = select(magnitudes, target, granularity, scope=scope, alive=alive, min_keep=min_keep)
    return {name: chosen[name] & alive[name].bool() for name in magnitudes}
