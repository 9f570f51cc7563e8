"""Per-layer sparsity targets from a sensitivity analysis: the layers that tolerate more get more.

The rule, in two steps (pure functions, so tests check them by hand):

1. **Tolerated sparsity** ``t_l`` of layer ``l``: the largest grid sparsity ``s`` such that pruning
   ``l`` alone to *every* grid value up to ``s`` costs at most ``tolerance`` validation accuracy
   (absolute, e.g. 0.01 = one point). The first grid value that costs more ends the search, so a
   noisy recovery at a higher sparsity is not trusted. ``t_l = 0`` when the smallest grid value fails.
2. **Scaling to an overall target** ``T`` (optional): ``s_l = min(cap, α · t_l)`` with the single
   factor ``α ≥ 0`` for which the weight-count-weighted mean ``Σ n_l s_l / Σ n_l`` equals ``T``
   (``n_l``: entries of layer ``l``). Ratios between layers are kept until a layer reaches ``cap``;
   layers with ``t_l = 0`` stay dense. ``α`` is found exactly: the weighted sum is piecewise linear
   and increasing in ``α``, with a kink where each layer saturates at ``α = cap / t_l``.

The result maps weight names to sparsities (fractions of each tensor's entries removed), the input
of a layer-wise method's per-layer targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secateurs.errors import UsageError


def tolerated_sparsity(curve: Sequence[tuple[float, float]], tolerance: float) -> float:
    """The largest sparsity of ``curve`` (``(sparsity, accuracy drop)`` pairs) before the first drop > ``tolerance``."""
    tolerated = 0.0
    for sparsity, drop in sorted(curve):
        if drop > tolerance + 1e-9:  # 1.0 - 0.99 is 0.010000000000000009: a drop of one point meets 0.01
            break
        tolerated = sparsity
    return tolerated


def scale_to_target(
    tolerated: Mapping[str, float], sizes: Mapping[str, int], target: float, cap: float = 0.95
) -> dict[str, float]:
    """Per-layer sparsities ``min(cap, α · t_l)`` whose size-weighted mean is ``target`` (see the module docstring).

    Raises `UsageError` when no layer tolerates any pruning (and ``target > 0``) or when ``target``
    exceeds what the tolerant layers can give at ``cap``.
    """
    if not 0.0 <= target < 1.0:
        raise UsageError(f"the overall target sparsity must be in [0, 1), got {target}")
    if not 0.0 < cap < 1.0:
        raise UsageError(f"the per-layer cap must be in (0, 1), got {cap}")
    total = sum(sizes[name] for name in tolerated)
    wanted = target * total
    tolerant = sorted((name for name in tolerated if tolerated[name] > 0), key=lambda n: cap / tolerated[n])
    if target == 0.0:
        return dict.fromkeys(tolerated, 0.0)
    if not tolerant:
        raise UsageError(
            "no layer tolerates any pruning within the tolerance; raise --tolerance or use a finer sparsity grid"
        )
    reachable = cap * sum(sizes[name] for name in tolerant)
    if wanted > reachable + 1e-9 * total:
        raise UsageError(
            f"an overall sparsity of {target:g} is out of reach: the layers that tolerate pruning hold "
            f"{sum(sizes[n] for n in tolerant):,} of {total:,} weights, so at most {reachable / total:.4f} "
            f"with the per-layer cap {cap:g}; lower the target, raise --max-layer-sparsity or --tolerance"
        )
    factor = 0.0
    saturated = 0.0  # weights removed by layers already at the cap
    for index, name in enumerate(tolerant):
        slope = sum(sizes[n] * tolerated[n] for n in tolerant[index:])
        factor = (wanted - saturated) / slope
        if factor <= cap / tolerated[name]:
            break
        saturated += cap * sizes[name]
    return {name: min(cap, factor * tolerated[name]) if tolerated[name] > 0 else 0.0 for name in tolerated}


def weighted_sparsity(sparsities: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """``Σ n_l s_l / Σ n_l`` over the layers of ``sparsities``."""
    total = sum(sizes[name] for name in sparsities)
    return sum(sizes[name] * value for name, value in sparsities.items()) / total if total else 0.0
