"""Options of the iterative methods (``imp``, ``infcop-if``, ``infcop-gf``) and their pure helpers.

Kept apart from the engine so the per-round rate and the rule/scope checks are testable alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from secateurs.errors import UsageError
from secateurs.sparsity.fractions import check_sparsity
from secateurs.sparsity.schedules import per_round_rate

LOTTERY_TICKET_RATE = 0.2
"""The lottery-ticket default: each round removes 20 % of every layer's surviving weights."""


class IterativeOptions(BaseModel):
    """Rounds of prune → rewind → retrain; the retraining budget per round is the fine-tuning config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(8, ge=1)
    """Pruning rounds R (each is one prune step, one rewind and one retraining phase)."""
    rule: Literal["lth", "sap"] = "lth"
    """``lth``: remove a fixed fraction of the survivors per round (layer-wise unless ``--scope global``);
    ``sap``: the PQ-index adaptive global fraction (sparsity/pq_index.py)."""
    rate: float | None = Field(None, gt=0, lt=1)
    """``lth`` only: fraction of survivors removed per round. Default: 1 − (1 − S)^(1/R) from the
    config's sparsity S, or 0.2 (lottery ticket) when S = 0."""
    sap_p: float = Field(1.0, gt=0)
    sap_q: float = Field(2.0, gt=0)
    rewind: Literal["warmup", "initial"] = "warmup"
    """``warmup``: rewind to the weights after the warm-up (the given model when ``warmup_epochs`` is 0,
    InfCoP's default); ``initial``: rewind to the given weights, before any warm-up (classic lottery
    ticket when the given model is untrained)."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Dense training by the method before the first round (counted in its cost)."""
    dense_cycle: bool = False
    """Before the first prune, one retraining cycle of the dense network under the round's budget and
    stopping rule ("iteration 0" of InfCoP's released loop, METHODS.md §3.5; counted in the epochs).
    The rewind point stays the model before it; round 1 prunes the weights it leaves."""
    rewind_batchnorm: bool = False
    """Also rewind BatchNorm γ and every buffer (running statistics); by default only weights and biases
    (incl. β) are rewound, as in the released InfCoP code."""
    check_every: float = Field(0.5, gt=0)
    """Epochs between flow checks (fractions allowed); must not exceed the per-round budget."""
    flow_subset: int = Field(2000, ge=2)
    """Validation images (the first N of the split) every flow check uses."""
    flow_batch_size: int = Field(500, ge=1)
    flow_absolute: bool = False
    """Information flow: mean |Pearson correlation| instead of the signed mean."""
    flow_per_class: bool = False
    """Information flow: correlations within each class, averaged over classes."""

    @model_validator(mode="after")
    def _check(self) -> IterativeOptions:
        if self.sap_q <= self.sap_p:
            raise ValueError(f"SAP needs sap_p < sap_q, got sap_p={self.sap_p}, sap_q={self.sap_q}")
        if self.rate is not None and self.rule != "lth":
            raise ValueError("rate applies to rule 'lth' only (SAP's fractions are adaptive)")
        return self


class ImpOptions(IterativeOptions):
    monitor: Literal["none", "information", "gradient", "both"] = "none"
    """Log flow distances every ``check_every`` epochs without stopping (E-INF-2); not counted as cost."""
    early_round_epochs: float | None = Field(None, gt=0)
    """A flow-free control for InfCoP: every round but the last retrains for only this many epochs (the
    last gets the whole budget). None: every round gets the whole budget (classic IMP)."""


class InfcopOptions(IterativeOptions):
    dense_cycle: bool = True
    """InfCoP runs "iteration 0" by default, as the paper's code does (`IterativeOptions.dense_cycle`)."""
    epsilon: float = Field(0.05, gt=0)
    """Stop a round's retraining when ‖φ − φ_ref‖₂ < ε (relative: ‖φ − φ_ref‖₂ / ‖φ_ref‖₂ < ε)."""
    relative: bool = False
    stop_on_accuracy: bool = True
    """Also stop when the probe accuracy reaches the dense reference's."""


class GradientFlowOptions(InfcopOptions):
    @model_validator(mode="after")
    def _information_only(self) -> GradientFlowOptions:
        if self.flow_absolute or self.flow_per_class:
            raise ValueError("flow_absolute and flow_per_class apply to information flow (infcop-if) only")
        return self


def resolve_rate(options: IterativeOptions, sparsity: float) -> float:
    """The ``lth`` per-round rate: ``rate``, else 1 − (1 − S)^(1/R), else 0.2 when S = 0.

    Giving both ``rate`` and a sparsity S > 0 that R rounds at that rate do not reach is an error.
    """
    check_sparsity(sparsity)
    if options.rate is not None:
        reached = 1.0 - (1.0 - options.rate) ** options.rounds
        if sparsity > 0 and abs(reached - sparsity) > 1e-6:
            raise UsageError(
                f"rate {options.rate} over {options.rounds} rounds removes {reached:.6f}, not the requested "
                f"sparsity {sparsity}; give either the rate (with sparsity 0) or the sparsity"
            )
        return options.rate
    if sparsity == 0.0:
        return LOTTERY_TICKET_RATE
    return per_round_rate(sparsity, options.rounds)


def cumulative_keep(rate: float, round_index: int, rounds: int, final: float | None) -> float:
    """Fraction of the starting survivors kept after ``round_index`` rounds: (1 − rate)^t.

    At the last round with a requested ``final`` sparsity it is exactly 1 − final, so R rounds land
    on S without floating-point drift.
    """
    if final is not None and final > 0 and round_index == rounds:
        return 1.0 - final
    return (1.0 - rate) ** round_index
