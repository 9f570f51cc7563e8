"""Granularities: which sets of weights are kept or removed together.

A granularity turns a tensor of per-element scores into a keep-mask of the same shape. "Unit"
granularities (element, filter, ...) reduce scores to independent units, rank the units and expand
the kept ones back; *balanced* granularities (window, N:M, registered by other modules) keep the same
number of elements in every fixed-size group and override `select`.

Rounding rule for every granularity: a layer keeps ``max(min_keep, round((1 - s) · units))`` units,
so the realised sparsity is the nearest reachable one; callers report the realised figure. Units whose
score is ``-inf`` (already removed) are never kept, even when fewer than that are left. Ties go to the
unit that comes first in flattened order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch

from secateurs.errors import UsageError
from secateurs.registry import Registry


def keep_count(units: int, sparsity: float, min_keep: int = 1) -> int:
    """How many of ``units`` a layer keeps at ``sparsity``: ``max(min_keep, round((1 - s) · units))``."""
    return min(units, max(min_keep, round((1.0 - sparsity) * units)))


def top_units(unit_scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask over ``unit_scores`` keeping the ``keep`` largest; ties go to the lower flat index."""
    flat = unit_scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        mask[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
    return mask.view(unit_scores.shape)


def alive_units(unit_scores: torch.Tensor) -> int:
    """How many units are still alive (score above ``-inf``)."""
    return int((unit_scores > float("-inf")).sum())


class Granularity(ABC):
    """How a weight tensor is cut into prunable units."""

    name: ClassVar[str]
    supports_global: ClassVar[bool] = True

    def check(self, parameter: str, shape: torch.Size) -> None:  # noqa: B027 - optional hook
        """Raise `UsageError` naming ``parameter`` if this granularity cannot cut ``shape``."""

    @abstractmethod
    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores reduced to one per unit (any shape; ``-inf`` anywhere in a unit makes it ``-inf``)."""

    @abstractmethod
    def unit_size(self, shape: torch.Size) -> int:
        """Number of weight entries in one unit of a tensor of ``shape``."""

    @abstractmethod
    def expand(self, unit_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Element-level boolean mask of ``shape`` from a unit-level mask."""

    def select(self, scores: torch.Tensor, sparsity: float, min_keep: int = 1) -> torch.Tensor:
        """Layer-wise keep-mask removing ``sparsity`` of this tensor's units (highest scores kept)."""
        units = self.unit_scores(scores)
        keep = min(keep_count(units.numel(), sparsity, min_keep), alive_units(units))
        return self.expand(top_units(units, keep), scores.shape)


GRANULARITIES: Registry[Granularity] = Registry("granularity")


class Element(Granularity):
    """Unstructured: every weight is its own unit."""

    name = "element"

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores

    def unit_size(self, shape: torch.Size) -> int:
        return 1

    def expand(self, unit_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return unit_mask.reshape(shape)


class Filter(Granularity):
    """Whole output filters (conv) or rows (linear): unit = ``weight[o]``; unit score = sum of scores."""

    name = "filter"

    def check(self, parameter: str, shape: torch.Size) -> None:
        if len(shape) < 2:
            raise UsageError(f"filter granularity needs a ≥2-D weight; {parameter} has shape {tuple(shape)}")

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.reshape(scores.shape[0], -1).sum(dim=1)

    def unit_size(self, shape: torch.Size) -> int:
        return int(torch.Size(shape[1:]).numel())

    def expand(self, unit_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return unit_mask.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


GRANULARITIES.add("element", Element())
GRANULARITIES.add("filter", Filter())

NamePattern = Callable[[str], "Granularity | None"]
NAME_PATTERNS: list[NamePattern] = []
"""Parsers of parametric names (``2:4``), append-only like the registry; each returns None for a
name it does not read. `secateurs.sparsity.granularities_structured` adds the N:M one."""


def register_pattern(parser: NamePattern) -> NamePattern:
    """Add ``parser`` to `NAME_PATTERNS` and return it (usable as a decorator)."""
    NAME_PATTERNS.append(parser)
    return parser


def granularity(name: str) -> Granularity:
    """The registered granularity ``name``, or an ``N:M`` pattern such as ``2:4``.

    An unknown name is a `UsageError` listing the accepted names.
    """
    if name not in GRANULARITIES:
        for parser in NAME_PATTERNS:
            pattern = parser(name)
            if pattern is not None:
                return pattern
        try:
            return GRANULARITIES.get(name)
        except UsageError as error:
            raise UsageError(f"{error}, or N:M (e.g. 2:4)") from None
    return GRANULARITIES.get(name)
