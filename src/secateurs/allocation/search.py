"""The one bisection of secateurs: the candidate whose achieved fraction lands closest to a target.

Every size search is the same problem: a one-dimensional knob (a number of removed channels, a
channel ratio, Torch-Pruning's ``pruning_ratio``) whose candidates remove a fraction of some quantity
(parameters, MACs) that grows, mostly, with the knob. `bisect` narrows the interval between a
candidate short of the target and one that reaches it, and returns whichever of the two final
candidates is closer to the target (the smaller removal on a tie). Callers provide the ends (and
decide what to do when even the top end falls short); the channel allocator
(`allocation.channels.search`) and the Torch-Pruning baselines (`methods.torch_pruning`) both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Candidate = TypeVar("Candidate")


def bisect(
    evaluate: Callable[[float], Candidate],
    achieved: Callable[[Candidate], float],
    target: float,
    below: tuple[float, Candidate],
    above: tuple[float, Candidate],
    *,
    steps: int,
    resolution: float,
    integer: bool = False,
) -> tuple[float, Candidate]:
    """``(position, candidate)`` whose ``achieved`` fraction is closest to ``target``.

    ``below`` and ``above`` are the ends (position, evaluated candidate); ``above`` should reach the
    target. When ``below`` already reaches it, it is returned. Otherwise at most ``steps`` midpoints
    are evaluated (``integer``: floor of the midpoint), each replacing the end on its side of the
    target, until the ends are ≤ 1 apart (integer) or closer than ``resolution``. Ties in distance go
    to the smaller achieved fraction, then to the lower end. ``evaluate`` and ``achieved`` must be pure.
    """
    low, best = below
    high, most = above
    if achieved(best) >= target:
        return low, best
    for _ in range(steps):
        middle = float((int(low) + int(high)) // 2) if integer else (low + high) / 2
        trial = evaluate(middle)
        if achieved(trial) >= target:
            high, most = middle, trial
        else:
            low, best = middle, trial
        if (high - low <= 1) if integer else (high - low < resolution):
            break
    return min(((low, best), (high, most)), key=lambda pair: (abs(achieved(pair[1]) - target), achieved(pair[1])))
