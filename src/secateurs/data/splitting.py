"""How a validation split is carved from labels: class histograms, stratified selection, skew checks.

Pure functions of label tensors (int64, N); `secateurs.data.types.split_validation` applies them.

Stratified selection. With ``n`` training examples of which ``n_c`` are of class c, and ``m`` validation
examples wanted in total, class c contributes ``q_c`` examples, its share ``m · n_c / n`` rounded by
the largest-remainder method: every class gets ``⌊m · n_c / n⌋``, and the ``m − Σ⌊…⌋`` examples left
go one each to the classes with the largest remainders (ties: the lower class index first). So
``Σ q_c = m`` exactly and every ``q_c`` is within one of its share. Which ``q_c`` examples of class c
are taken is a seeded draw: one ``torch.Generator`` seeded with ``seed`` permutes the class's
members (in dataset order) class after class, and the first ``q_c`` of the permutation are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SKEW_FACTOR = 2.0
"""A validation class holding under 1/2 or over 2× its share of the validation split is skewed."""
SKEW_MIN_SHARE = 4.0
"""Shares below this many examples are too small to judge "under half"; a missing class still counts."""
MAX_LISTED = 6
"""How many skewed classes a warning names."""


def class_histogram(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Examples per class, a list of ``num_classes`` counts (labels ≥ num_classes widen it)."""
    if labels.numel() == 0:
        return [0] * num_classes
    return [int(count) for count in torch.bincount(labels, minlength=num_classes)]


def class_quotas(counts: list[int], total: int) -> list[int]:
    """Largest-remainder apportionment of ``total`` examples over classes of sizes ``counts``.

    Returns ``q`` with ``sum(q) == total`` and ``q[c]`` equal to ``floor`` or ``ceil`` of
    ``total · counts[c] / sum(counts)``; ties in the remainder go to the lower class index.
    """
    n = sum(counts)
    if n == 0:
        return [0] * len(counts)
    floors = [count * total // n for count in counts]
    remainders = [count * total % n for count in counts]
    left = total - sum(floors)
    order = sorted(range(len(counts)), key=lambda c: (-remainders[c], c))
    for c in order[:left]:
        floors[c] += 1
    return floors


def stratified_validation_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices (sorted, int64) of ``size`` examples drawn class by class (see the module docstring)."""
    order = torch.argsort(labels, stable=True)  # members of each class, in dataset order
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    quotas = class_quotas([int(c) for c in counts], size)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    start = 0
    for count, quota in zip(counts.tolist(), quotas, strict=True):
        members = order[start : start + count]
        start += count
        permutation = torch.randperm(count, generator=generator)
        chosen.append(members[permutation[:quota]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.int64)


@dataclass(frozen=True)
class Skew:
    """One class whose validation count is far from its share."""

    label: int
    count: int
    share: float


def skewed_classes(all_counts: list[int], val_counts: list[int]) -> list[Skew]:
    """The classes of ``val_counts`` that are missing or hold under 1/2 or over 2× their share,
    the farthest from their share first (then by label).

    ``all_counts`` are the class counts of the set the validation split was taken from (or, for a
    validation set given separately, of the training set): a class's share is
    ``len(val) · all_counts[c] / sum(all_counts)``. A class is *missing* when its share is at least
    one example and it has none; *under* when its share is at least `SKEW_MIN_SHARE` and it holds
    less than half of it; *over* when it holds more than twice its share and at least 2 more.
    """
    total, size = sum(all_counts), sum(val_counts)
    if total == 0 or size == 0:
        return []
    skewed = []
    width = max(len(all_counts), len(val_counts))
    for label in range(width):
        count = val_counts[label] if label < len(val_counts) else 0
        share = size * (all_counts[label] if label < len(all_counts) else 0) / total
        missing = count == 0 and share >= 1.0
        under = share >= SKEW_MIN_SHARE and count < share / SKEW_FACTOR
        over = count > SKEW_FACTOR * share and count >= share + 2
        if missing or under or over:
            skewed.append(Skew(label, count, share))
    return sorted(skewed, key=lambda s: (-abs(s.count - s.share), s.label))


def skew_message(kind: str, skewed: list[Skew], size: int, class_names: tuple[str, ...] | None = None) -> str:
    """One line naming the skewed classes' counts and shares (at most `MAX_LISTED` of them)."""

    def name(label: int) -> str:
        if class_names is not None and label < len(class_names):
            return f"class {label} ({class_names[label]})"
        return f"class {label}"

    listed = ", ".join(f"{name(s.label)} has {s.count} (share {s.share:.1f})" for s in skewed[:MAX_LISTED])
    more = f" and {len(skewed) - MAX_LISTED} more" if len(skewed) > MAX_LISTED else ""
    advice = (
        "; the stratified split (data.split: stratified, --split stratified) gives every class its share"
        if kind == "tail"
        else ""
    )
    return f"the {kind} validation split of {size} examples is skewed by class: {listed}{more}{advice}"
