"""The PQ index and the adaptive pruning fraction of SAP (sparsity-informed adaptive pruning).

Diao, Wang, Ding, Tarokh, "Pruning deep neural networks from a sparsity perspective", ICLR 2023
(arXiv 2302.05601), as used by InfCoP (METHODS.md §3.5). For the d surviving weights w and
0 < p < q:

    I(w) = 1 − d^{1/q − 1/p} · ‖w‖_p / ‖w‖_q                       (PQ index, 0 ≤ I < 1)
    m    = ⌈ d · (1 + η)^{q/(p − q)} · (1 − I)^{qp/(q − p)} ⌉      (weights to retain)
    f    = clip(γ · (1 − m/d), 0, β)                              (fraction of survivors removed)

with η = 0, γ = 1, β = 0.9 as in the released InfCoP code. Worked cases: (p, q) = (1, 2) gives
m = ‖w‖₁² / ‖w‖₂², i.e. m/d = 2/π and f ≈ 0.363 for Gaussian weights; (p, q) = (0.5, 1) gives
m = (Σ √|w|)² / Σ |w| and f ≈ 0.153. ``‖w‖_p`` for p < 1 is the quasi-norm (Σ |w|^p)^{1/p}.

Pure functions; everything is computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from secateurs.errors import UsageError


def check_pq(p: float, q: float) -> None:
    """Accepted: 0 < p < q."""
    if not (p > 0 and q > p):
        raise UsageError(f"SAP needs 0 < p < q, got p={p}, q={q}")


def p_norm(values: torch.Tensor, p: float) -> float:
    """(Σ |v|^p)^{1/p} in float64 (a quasi-norm for p < 1)."""
    return float(values.detach().to(torch.float64).abs().pow(p).sum().pow(1.0 / p))


def pq_index(weights: torch.Tensor, p: float = 1.0, q: float = 2.0) -> float:
    """I = 1 − d^{1/q − 1/p} ‖w‖_p / ‖w‖_q over the entries of ``weights`` (0 for all-equal |w|)."""
    check_pq(p, q)
    count = weights.numel()
    if count == 0:
        raise UsageError("the PQ index needs at least one surviving weight")
    norm_q = p_norm(weights, q)
    if norm_q == 0.0:
        return 0.0
    return 1.0 - count ** (1.0 / q - 1.0 / p) * p_norm(weights, p) / norm_q


def retained_count(weights: torch.Tensor, p: float = 1.0, q: float = 2.0, eta: float = 0.0) -> int:
    """m = ⌈d (1+η)^{q/(p−q)} (1 − I)^{qp/(q−p)}⌉, capped at d."""
    count = weights.numel()
    index = pq_index(weights, p, q)
    value = count * (1.0 + eta) ** (q / (p - q)) * (1.0 - index) ** (q * p / (q - p))
    # A relative tolerance keeps ⌈·⌉ from jumping by one on float noise (m/d = 1 exactly for equal |w|).
    return min(count, math.ceil(value - 1e-9 * max(1.0, value)))


def sap_fraction(
    weights: torch.Tensor,
    p: float = 1.0,
    q: float = 2.0,
    *,
    eta: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
) -> float:
    """The fraction of the surviving ``weights`` SAP removes: clip(γ (1 − m/d), 0, β)."""
    count = weights.numel()
    kept = retained_count(weights, p, q, eta)
    return min(max(gamma * (1.0 - kept / count), 0.0), beta)


def surviving_values(weights: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The surviving entries of every tensor, concatenated (SAP's index is global over them)."""
    parts = [weights[name].detach().reshape(-1)[alive[name].reshape(-1).bool()] for name in weights]
    return torch.cat(parts) if parts else torch.zeros(0)


def sap_masks(
    weights: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    p: float = 1.0,
    q: float = 2.0,
    *,
    cap: float = 0.0,
    min_keep: int = 1,
    eta: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
) -> tuple[dict[str, torch.Tensor], float]:
    """One SAP step: remove the ⌊d·f⌋ smallest-|w| surviving weights over all tensors together.

    ``cap`` > 0 limits the step so that at most a fraction ``cap`` of all entries ends up removed
    (0: no limit). Every tensor keeps at least ``min_keep`` entries (its largest survivors). Returns
    the new keep-masks and the fraction of survivors actually removed. Ties in |w| are broken by
    position (stable sort).
    """
    survivors = surviving_values(weights, alive)
    count = survivors.numel()
    fraction = sap_fraction(survivors, p, q, eta=eta, gamma=gamma, beta=beta)
    removals = math.floor(count * fraction + 1e-9)  # d − m exactly when the fraction is not clipped
    if cap > 0.0:
        total = sum(tensor.numel() for tensor in weights.values())
        removals = cap_removals(removals, count, total, cap)
    masks = remove_smallest(weights, alive, removals, min_keep=min_keep)
    kept = sum(int(mask.sum()) for mask in masks.values())
    return masks, (count - kept) / count


def cap_removals(removals: int, survivors: int, total: int, cap: float) -> int:
    """``removals`` limited so that at most ``cap`` of the ``total`` entries end up removed."""
    allowed = survivors - math.ceil(round((1.0 - cap) * total, 6))
    return max(0, min(removals, allowed))


def remove_smallest(
    weights: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    removals: int,
    *,
    min_keep: int = 0,
) -> dict[str, torch.Tensor]:
    """Keep-masks with the ``removals`` smallest-|w| surviving entries (over all tensors) removed.

    A tensor left with fewer than ``min_keep`` entries gets back its largest removed survivors.
    """
    names = list(weights)
    magnitudes = [weights[name].detach().abs().to(torch.float64).reshape(-1) for name in names]
    alive_flat = [alive[name].reshape(-1).bool() for name in names]
    keep = torch.cat(alive_flat)
    if removals > 0:
        ranked = torch.cat([m.masked_fill(~a, -1.0) for m, a in zip(magnitudes, alive_flat, strict=True)])
        order = torch.argsort(ranked, stable=True)
        dead = int((~keep).sum())
        keep = keep.clone()
        keep[order[dead : dead + removals]] = False
    masks = {}
    offset = 0
    for name, magnitude, was_alive in zip(names, magnitudes, alive_flat, strict=True):
        size = magnitude.numel()
        kept = keep[offset : offset + size].clone()
        offset += size
        minimum = min(min_keep, int(was_alive.sum()))
        if int(kept.sum()) < minimum:
            kept[torch.topk(magnitude.masked_fill(~was_alive, -1.0), minimum).indices] = True
        masks[name] = kept.view(weights[name].shape)
    return masks
