"""Sparsity schedules: the target fraction removed as a function of the training step.

Every schedule hits its endpoints exactly: ``s(start) = initial`` and ``s(t) = final`` for ``t ≥ end``.
"""

from __future__ import annotations

from dataclasses import dataclass

from secateurs.errors import UsageError
from secateurs.sparsity.fractions import check_sparsity


@dataclass(frozen=True)
class CubicSchedule:
    """Zhu & Gupta (2017), "To prune, or not to prune" (arXiv 1710.01878), eq. (1):

        s(t) = s_f + (s_i − s_f) · (1 − (t − t₀) / (t_end − t₀))³   for t₀ ≤ t ≤ t_end,

    with s(t) = s_i before t₀ and s_f after t_end. ``s_i`` is the initial and ``s_f`` the final
    fraction removed; t counts optimizer steps. Masks are recomputed every ``every`` steps (Δt) from
    t₀ on, and at t_end exactly.
    """

    final: float
    start: int
    end: int
    every: int
    initial: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity(self.final, "final sparsity")
        check_sparsity(self.initial, "initial sparsity")
        if self.start < 0:
            raise UsageError(f"schedule start must be ≥ 0, got {self.start}")
        if self.end <= self.start:
            raise UsageError(f"schedule end ({self.end}) must come after start ({self.start})")
        if self.every < 1:
            raise UsageError(f"mask update interval must be ≥ 1 step, got {self.every}")

    def sparsity(self, step: int) -> float:
        if step <= self.start:
            return self.initial
        if step >= self.end:
            return self.final
        progress = (step - self.start) / (self.end - self.start)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    def is_update_step(self, step: int) -> bool:
        """True at t₀, t₀ + Δt, t₀ + 2Δt, … before t_end, and at t_end."""
        if step == self.end:
            return True
        return self.start <= step < self.end and (step - self.start) % self.every == 0


def geometric_sparsity(rate: float, rounds: int) -> float:
    """Fraction removed after ``rounds`` rounds that each remove ``rate`` of the survivors: 1 − (1 − p)^r."""
    check_sparsity(rate, "per-round rate")
    if rounds < 0:
        raise UsageError(f"rounds must be ≥ 0, got {rounds}")
    return 1.0 - (1.0 - rate) ** rounds


def per_round_rate(final: float, rounds: int) -> float:
    """The per-round rate that reaches ``final`` after ``rounds`` rounds: 1 − (1 − S)^(1/R)."""
    check_sparsity(final, "final sparsity")
    if rounds < 1:
        raise UsageError(f"rounds must be ≥ 1, got {rounds}")
    return 1.0 - (1.0 - final) ** (1.0 / rounds)
