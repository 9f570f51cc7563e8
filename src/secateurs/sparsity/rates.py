"""Per-layer rate protocols (Park et al. 2020, lookahead pruning, arXiv 2002.04809, §1.4 of METHODS.md).

A *rate list* gives each prunable layer i the fraction p_i it loses in one round. After ``rounds``
rounds (the paper's iteration index ``it``) layer i has lost

    s_i = 1 − (1 − p_i)^rounds

of its weights. One-shot pruning to round ``it`` removes s_i of each dense layer at once; iterative
pruning removes p_i of the survivors each round, which reaches the same s_i. The *nominal* overall
target is the size-weighted mean ``Σ n_i s_i / Σ n_i`` (n_i = entries of layer i); global protocols
prune to that one number.

Rounding: a layer of n entries keeps ``max(min_keep, round((1 − s_i) · n))`` entries (Python's
``round``: halves go to the even neighbour), the rule every granularity applies; the realised figure
is reported next to the nominal one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secateurs.errors import UsageError
from secateurs.sparsity.fractions import check_sparsity


def check_rates(rates: Sequence[float], names: Sequence[str]) -> None:
    """Raise `UsageError` unless there is exactly one rate in [0, 1) per prunable layer of ``names``."""
    if len(rates) != len(names):
        shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
        raise UsageError(
            f"the rate list has {len(rates)} entries but the model has {len(names)} prunable layers "
            f"({shown}); give one rate per layer, in this order"
        )
    for name, rate in zip(names, rates, strict=True):
        check_sparsity(rate, f"rate of {name}")


def layer_targets(rates: Sequence[float], names: Sequence[str], rounds: int) -> dict[str, float]:
    """``{name: 1 − (1 − p_i)^rounds}``: the fraction each layer has lost after ``rounds`` rounds."""
    check_rates(rates, names)
    if rounds < 0:
        raise UsageError(f"rounds must be ≥ 0, got {rounds}")
    return {name: 1.0 - (1.0 - float(rate)) ** rounds for name, rate in zip(names, rates, strict=True)}


def nominal_sparsity(targets: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """The size-weighted mean of the per-layer targets: ``Σ n_i s_i / Σ n_i``."""
    total = sum(sizes[name] for name in targets)
    if total == 0:
        raise UsageError("the prunable layers have no entries")
    return sum(targets[name] * sizes[name] for name in targets) / total
