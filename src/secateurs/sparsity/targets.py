"""Which weights a method may touch: every Conv2d/Linear weight, minus user exclusions."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from secateurs.errors import UsageError
from secateurs.metrics.counts import prunable_weights


def prunable_names(
    model: nn.Module,
    *,
    exclude: Sequence[str] = (),
    skip_first: bool = False,
    skip_last: bool = False,
) -> list[str]:
    """Canonical names (``features.0.weight``) of the weights to prune, in module order.

    ``exclude`` holds fnmatch patterns matched against weight names and module names
    (``classifier*``, ``features.0.weight``); ``skip_first``/``skip_last`` leave the first / last
    prunable layer dense. A pattern that matches nothing is an error (it is usually a typo).
    """
    names = [name for name, _ in prunable_weights(model)]
    if skip_first and names:
        names = names[1:]
    if skip_last and names:
        names = names[:-1]
    for pattern in exclude:
        matched = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.rsplit(".", 1)[0], pattern)]
        if not matched:
            raise UsageError(f"exclude pattern {pattern!r} matches no prunable weight; weights: {', '.join(names)}")
        names = [n for n in names if n not in matched]
    if not names:
        raise UsageError("no prunable weights left (every Conv2d/Linear weight is excluded)")
    return names
