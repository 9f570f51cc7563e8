"""Fractions removed: the one validator of a sparsity value (ARCHITECTURE.md: the fraction removed, in [0, 1))."""

from __future__ import annotations

from secateurs.errors import UsageError


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """Validate a fraction removed: accepted range [0, 1)."""
    value = float(sparsity)
    if not 0.0 <= value < 1.0 or value != value:
        raise UsageError(f"{what} must be in [0, 1) (the fraction removed), got {sparsity}")
    return value
