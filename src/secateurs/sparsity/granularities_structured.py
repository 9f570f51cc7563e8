"""Balanced structured granularities: ``window``, ``kernel``, ``window+kernel`` and ``N:M``.

Each keeps the *same number* of entries in every fixed-size group of a weight tensor, so a pruned
tensor is stored as values plus fixed-length index lists (or bitmasks): the "compressible" structure
of Campfire (Gamboa et al. 2020, arXiv 2001.03253; METHODS.md §4.2).

=================  =========================================  =====================================
granularity        group (what keeps the same count)           kept per group at sparsity ``s``
=================  =========================================  =====================================
``window``         the k×k taps of every kernel ``W[o, i]``     ``round((1 − s) · k²)`` taps
``kernel``         the C_in kernels of every filter ``W[o]``     ``round((1 − s) · C_in)`` kernels
``window+kernel``  both of the above, nested                    ``round(√(1 − s) · C_in)`` kernels,
                                                                ``round(√(1 − s) · k²)`` taps each
``N:M``            M consecutive weights along the reduction    ``N`` (``n:m``: ``round((1 − s) · 4)``
                   dimension, in (kh, kw, C_in) order             of every 4)
=================  =========================================  =====================================

Rounding rule (every balanced granularity): a group of ``G`` entries keeps ``round((1 − s) · G)``
entries, ``round`` being Python's (nearest integer, ties to even), so the realised sparsity is
``1 − keep / G``: multiples of 1/9 for 3×3 windows (66.7 % is exact, a 70 % target realises 66.7 %).
A group always keeps at least one entry; a target that would keep none is a `UsageError` naming the
accepted range ``[0, 1 − 1 / (2G))``. Callers report the realised sparsity, never the requested one.

``window+kernel`` splits one target density ``d = 1 − s`` equally (geometric mean) between the two
levels: kernels at density ``√d`` and taps inside surviving kernels at density ``√d``, each rounded by
the rule above, so the realised density is ``keep_k / C_in · keep_w / k²`` (e.g. 66.7 % on a
32-input 3×3 conv keeps 18 of 32 kernels and 5 of 9 taps: 68.75 %).

``N:M`` follows the hardware convention (NVIDIA's 2:4 sparse tensor cores): groups of M consecutive
weights along the reduction (GEMM K) dimension of a channels-last implicit GEMM, i.e. the flattened
(kh, kw, C_in) axis of each output filter; for a linear layer, M consecutive input features. M must
divide C_in·kh·kw. The registry entry ``n:m`` is M = 4 with N set by the sparsity; a name ``"N:M"``
(``"2:4"``, ``"1:3"``) fixes the pattern: its final target must round to N of M (checked by
`check_target`) and intermediate targets of a gradual schedule use the same M with more kept
(`schedule_granularity`). N:M is the only balanced granularity for 1×1 convs and linear layers.

Scores: the unit score of a kernel is the sum of its entries' scores (the L1 norm for magnitude
scores), ignoring entries already removed (``-inf``); a kernel whose entries are all removed scores
``-inf``. Within a group ties are broken by position (a stable sort), so for fixed scores the masks
are nested: raising the sparsity only removes entries.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod

import torch

from secateurs.errors import UsageError
from secateurs.sparsity.granularity import GRANULARITIES, Granularity, keep_count, register_pattern

N_OF_M_NAME = re.compile(r"^(\d+):(\d+)$")


def balanced_keep(group: int, sparsity: float, what: str) -> int:
    """Entries kept in a group of ``group`` at ``sparsity``: ``round((1 − s) · group)``, at least 1.

    Raises `UsageError` (naming ``what`` and the accepted range ``[0, 1 − 1/(2·group))``) when the
    target would keep nothing.
    """
    keep = round((1.0 - sparsity) * group)
    if keep < 1:
        bound = 1.0 - 1.0 / (2 * group)
        raise UsageError(
            f"{what}: sparsity {sparsity:g} would keep 0 of every {group}; accepted: [0, {bound:.4f}) "
            f"(reachable sparsities are k/{group})"
        )
    return min(group, keep)


def top_in_groups(groups: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask over ``groups`` (rows × G) keeping the ``keep`` largest of every row.

    Ties go to the lower position (stable descending sort), so the kept set for ``keep`` contains the
    kept set for any smaller ``keep`` (nested masks). Entries scored ``-inf`` (already removed) are
    never kept, so a row with fewer than ``keep`` live entries keeps only those.
    """
    order = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :keep]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=groups.device)
    return mask.scatter_(1, order, True) & (groups > float("-inf"))


def kernel_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-kernel scores (O × C_in) of a conv score tensor: the sum of each kernel's finite scores.

    Entries already removed (``-inf``) contribute nothing; a kernel with no finite entry scores ``-inf``.
    """
    flat = scores.reshape(scores.shape[0], scores.shape[1], -1)
    finite = torch.isfinite(flat)
    summed = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype)).sum(dim=2)
    return summed.masked_fill(~finite.any(dim=2), float("-inf"))


def _conv_shape(name: str, parameter: str, shape: torch.Size, *, spatial: bool) -> None:
    if len(shape) != 4:
        raise UsageError(
            f"{name} granularity needs a conv weight (out × in × kh × kw); {parameter} has shape {tuple(shape)}: "
            "use an N:M granularity (e.g. '2:4') for linear layers, or exclude the layer"
        )
    if spatial and shape[2] * shape[3] < 2:
        raise UsageError(
            f"{name} granularity needs k×k kernels with more than one tap; {parameter} has shape {tuple(shape)}: "
            "use an N:M granularity (e.g. '2:4') for 1×1 convs, or exclude the layer"
        )


class Balanced(Granularity):
    """A granularity keeping the same count in every group; selection is layer-wise only.

    The unit methods of `Granularity` treat single entries as units (the balance constraint lives in
    `select`); `supports_global` is false, so no global ranking ever uses them.
    """

    supports_global = False

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores

    def unit_size(self, shape: torch.Size) -> int:
        return 1

    def expand(self, unit_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return unit_mask.reshape(shape)

    @abstractmethod
    def kept_fraction(self, shape: torch.Size, sparsity: float) -> float:
        """Realised density of a tensor of ``shape`` at ``sparsity`` (the documented rounding)."""

    def realised_sparsity(self, shape: torch.Size, sparsity: float) -> float:
        """``1 − kept_fraction``: what `select` realises (raises like `select` when unreachable)."""
        return 1.0 - self.kept_fraction(shape, sparsity)

    def check_target(self, sparsity: float) -> None:
        """Raise `UsageError` if ``sparsity`` is not an acceptable *final* target (N:M patterns)."""

    def schedule_granularity(self) -> Granularity:
        """The granularity to use for the intermediate targets of a gradual schedule (default: self)."""
        return self


class Window(Balanced):
    """Intra-kernel: every k×k kernel keeps the same number of its largest taps."""

    name = "window"

    def check(self, parameter: str, shape: torch.Size) -> None:
        _conv_shape(self.name, parameter, shape, spatial=True)

    def kept_fraction(self, shape: torch.Size, sparsity: float) -> float:
        taps = shape[2] * shape[3]
        return balanced_keep(taps, sparsity, "window granularity") / taps

    def select(self, scores: torch.Tensor, sparsity: float, min_keep: int = 1) -> torch.Tensor:
        self.check("weight", scores.shape)
        taps = scores.shape[2] * scores.shape[3]
        keep = balanced_keep(taps, sparsity, f"window granularity ({scores.shape[2]}×{scores.shape[3]} kernels)")
        return top_in_groups(scores.reshape(-1, taps), keep).reshape(scores.shape)


class Kernel(Balanced):
    """Whole k×k kernels: every filter keeps the same number of its highest-norm kernels."""

    name = "kernel"

    def check(self, parameter: str, shape: torch.Size) -> None:
        _conv_shape(self.name, parameter, shape, spatial=False)

    def kept_fraction(self, shape: torch.Size, sparsity: float) -> float:
        return balanced_keep(shape[1], sparsity, "kernel granularity") / shape[1]

    def select(self, scores: torch.Tensor, sparsity: float, min_keep: int = 1) -> torch.Tensor:
        self.check("weight", scores.shape)
        keep = balanced_keep(scores.shape[1], sparsity, f"kernel granularity ({scores.shape[1]} kernels per filter)")
        kept = top_in_groups(kernel_scores(scores), keep)
        return kept[:, :, None, None].expand(scores.shape).clone()


def split_density(sparsity: float) -> float:
    """The per-level sparsity of ``window+kernel``: ``1 − √(1 − s)`` (density split equally)."""
    return 1.0 - math.sqrt(1.0 - sparsity)


class WindowKernel(Balanced):
    """Kernels per filter, then taps per surviving kernel: density (1 − s_k)(1 − s_w), split equally."""

    name = "window+kernel"

    def check(self, parameter: str, shape: torch.Size) -> None:
        _conv_shape(self.name, parameter, shape, spatial=True)

    def keep_counts(self, shape: torch.Size, sparsity: float) -> tuple[int, int]:
        """``(kernels kept per filter, taps kept per surviving kernel)``."""
        part = split_density(sparsity)
        inputs, taps = shape[1], shape[2] * shape[3]
        smallest = min(inputs, taps)
        what = f"window+kernel granularity ({inputs} kernels of {taps} taps, density split as √(1 − s) each)"
        if round((1.0 - part) * smallest) < 1:
            bound = 1.0 - (1.0 / (2 * smallest)) ** 2
            raise UsageError(
                f"{what}: sparsity {sparsity:g} would keep 0 of every {smallest}; accepted: [0, {bound:.4f})"
            )
        return balanced_keep(inputs, part, what), balanced_keep(taps, part, what)

    def kept_fraction(self, shape: torch.Size, sparsity: float) -> float:
        kernels, taps = self.keep_counts(shape, sparsity)
        return kernels * taps / (shape[1] * shape[2] * shape[3])

    def select(self, scores: torch.Tensor, sparsity: float, min_keep: int = 1) -> torch.Tensor:
        self.check("weight", scores.shape)
        kernels, taps = self.keep_counts(scores.shape, sparsity)
        kernel_mask = top_in_groups(kernel_scores(scores), kernels)[:, :, None, None]
        window_mask = top_in_groups(scores.reshape(-1, scores.shape[2] * scores.shape[3]), taps)
        return window_mask.reshape(scores.shape) & kernel_mask


def reduction_groups(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """``tensor`` (out × in [× kh × kw]) as rows of ``m`` consecutive entries in (kh, kw, in) order."""
    if tensor.dim() == 4:
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.reshape(-1, m)


def from_reduction_groups(groups: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of `reduction_groups` for a tensor of ``shape``."""
    if len(shape) == 4:
        out, inputs, height, width = shape
        return groups.reshape(out, height, width, inputs).permute(0, 3, 1, 2).contiguous()
    return groups.reshape(shape)


class NOfM(Balanced):
    """N of every M consecutive input weights (reduction order kh, kw, C_in): 2:4-style sparsity."""

    def __init__(self, n: int | None, m: int) -> None:
        if m < 1 or (n is not None and not 1 <= n <= m):
            raise UsageError(f"granularity '{n}:{m}' needs 1 ≤ N ≤ M (keep N of every M weights), got N={n}, M={m}")
        self.n = n
        self.m = m
        self.name = "n:m" if n is None else f"{n}:{m}"  # type: ignore[misc]  # per-instance name

    def check(self, parameter: str, shape: torch.Size) -> None:
        if len(shape) not in (2, 4):
            raise UsageError(
                f"granularity {self.name} needs a linear or conv weight; {parameter} has shape {tuple(shape)}"
            )
        reduction = int(torch.Size(shape[1:]).numel())
        if reduction % self.m:
            raise UsageError(
                f"granularity {self.name} groups {self.m} consecutive input weights, but {parameter} "
                f"(shape {tuple(shape)}) has {reduction} per output (C_in·kh·kw), not a multiple of {self.m}"
            )

    def accepted_interval(self) -> tuple[float, float]:
        """Final targets that round to exactly N of M: the open interval (1 − (N+½)/M, 1 − (N−½)/M)."""
        assert self.n is not None
        return max(0.0, 1.0 - (self.n + 0.5) / self.m), 1.0 - (self.n - 0.5) / self.m

    def check_target(self, sparsity: float) -> None:
        if self.n is not None and round((1.0 - sparsity) * self.m) != self.n:
            low, high = self.accepted_interval()
            raise UsageError(
                f"granularity '{self.name}' keeps {self.n} of every {self.m} (sparsity {1 - self.n / self.m:.4f}); "
                f"sparsity {sparsity:g} does not round to it: accepted ({low:.4f}, {high:.4f})"
            )

    def schedule_granularity(self) -> Granularity:
        return NOfM(None, self.m)

    def kept_fraction(self, shape: torch.Size, sparsity: float) -> float:
        return self._keep(sparsity) / self.m

    def _keep(self, sparsity: float) -> int:
        self.check_target(sparsity)
        return balanced_keep(self.m, sparsity, f"granularity {self.name}")

    def select(self, scores: torch.Tensor, sparsity: float, min_keep: int = 1) -> torch.Tensor:
        self.check("weight", scores.shape)
        kept = top_in_groups(reduction_groups(scores, self.m), self._keep(sparsity))
        return from_reduction_groups(kept, scores.shape)


@register_pattern
def parse_pattern(name: str) -> Granularity | None:
    """The `NOfM` granularity for a name ``"N:M"`` (e.g. ``"2:4"``); None for any other name."""
    match = N_OF_M_NAME.match(name.strip())
    if match is None:
        return None
    return NOfM(int(match.group(1)), int(match.group(2)))


def realised_sparsity(granularity: Granularity, shape: torch.Size, sparsity: float, min_keep: int = 1) -> float:
    """What `granularity` realises on a tensor of ``shape`` at ``sparsity`` (the documented rounding)."""
    if isinstance(granularity, Balanced):
        return granularity.realised_sparsity(shape, sparsity)

    units = int(granularity.unit_scores(torch.zeros(shape)).numel())
    return 1.0 - keep_count(units, sparsity, min_keep) / units


GRANULARITIES.add("window", Window())
GRANULARITIES.add("kernel", Kernel())
GRANULARITIES.add("window+kernel", WindowKernel())
GRANULARITIES.add("n:m", NOfM(None, 4))
