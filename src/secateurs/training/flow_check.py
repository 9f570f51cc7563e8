"""Flow checks during training: InfCoP's early-stopping rule and the IMP flow monitor.

Within one retraining phase a check runs every ``check_every`` epochs (fractions allowed: the check
steps are ``round(k · check_every · steps_per_epoch)``, k = 1, 2, …). A check measures the flow of the
model on the fixed probe, its distance to the dense reference, and the probe accuracy. The
`StoppingRule` then stops training with the first reason that holds:

1. ``flow``: ‖φ − φ_ref‖₂ < ε (or ‖φ − φ_ref‖₂ / ‖φ_ref‖₂ < ε when ``relative``);
2. ``accuracy``: the probe accuracy ≥ the dense reference's accuracy on the same probe (optional);

and the Trainer stops with ``budget`` when the round's epochs run out. No check runs at the very end
of the budget (it could not save anything) unless ``check_at_end`` (the monitor sets it, to log the
whole trajectory). Every check's wall time is added to ``seconds``: the overhead InfCoP pays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.scoring.flow import FlowMeasurement, flow_distance
from secateurs.training.loop import Callback, Trainer

FlowMeasure = Callable[[nn.Module], FlowMeasurement]


@dataclass(frozen=True)
class StoppingRule:
    """When a flow check ends a retraining phase (see the module docstring)."""

    epsilon: float
    relative: bool = False
    reference_accuracy: float | None = None
    """None: the accuracy criterion is off."""

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise UsageError(f"epsilon must be > 0, got {self.epsilon}")

    def decide(self, distance: float, relative_distance: float, accuracy: float) -> str | None:
        """``"flow"``, ``"accuracy"`` or None (continue). A NaN distance never satisfies the flow test."""
        value = relative_distance if self.relative else distance
        if math.isfinite(value) and value < self.epsilon:
            return "flow"
        if self.reference_accuracy is not None and accuracy >= self.reference_accuracy:
            return "accuracy"
        return None


def check_steps(check_every: float, steps_per_epoch: int, total_steps: int, *, at_end: bool = False) -> list[int]:
    """The optimizer steps after which a check runs: round(k · check_every · steps_per_epoch), k ≥ 1.

    Steps below 1 or repeated (a check interval shorter than a step) are dropped; steps at or after
    ``total_steps`` are dropped unless ``at_end``, which keeps one check at ``total_steps``.
    """
    if not check_every > 0:
        raise UsageError(f"check_every must be > 0 epochs, got {check_every}")
    steps: list[int] = []
    k = 1
    while True:
        step = round(k * check_every * steps_per_epoch)
        if step >= total_steps:
            break
        if step >= 1 and (not steps or step > steps[-1]):
            steps.append(step)
        k += 1
    if at_end and total_steps >= 1 and (not steps or steps[-1] < total_steps):
        steps.append(total_steps)
    return steps


class FlowCheck(Callback):
    """Measure flow every ``check_every`` epochs; stop the Trainer when ``rule`` says so.

    ``reference`` is φ_ref, ``reference_accuracy`` the dense model's probe accuracy (for the logged
    gap). Without a ``rule`` the callback only logs (the IMP monitor). ``records`` holds one dict
    per check: epochs, distance, relative_distance, probe_accuracy, accuracy_gap, seconds, decision.
    """

    def __init__(
        self,
        measure: FlowMeasure,
        reference: torch.Tensor,
        *,
        check_every: float,
        rule: StoppingRule | None = None,
        reference_accuracy: float | None = None,
        check_at_end: bool = False,
        name: str = "flow",
    ) -> None:
        self.measure = measure
        self.reference = reference
        self.check_every = check_every
        self.rule = rule
        self.reference_accuracy = reference_accuracy
        self.check_at_end = check_at_end
        self.name = name
        self.records: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._steps: set[int] = set()

    def on_train_begin(self, trainer: Trainer) -> None:
        self._steps = set(
            check_steps(self.check_every, trainer.steps_per_epoch, trainer.total_steps, at_end=self.check_at_end)
        )

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step not in self._steps:
            return
        started = time.perf_counter()
        measurement = self.measure(trainer.model)
        distance = flow_distance(measurement.values, self.reference)
        relative = flow_distance(measurement.values, self.reference, relative=True)
        decision = self.rule.decide(distance, relative, measurement.accuracy) if self.rule is not None else None
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        gap = self.reference_accuracy - measurement.accuracy if self.reference_accuracy is not None else None
        self.records.append(
            {
                "epochs": round(trainer.epochs_done, 6),
                "distance": distance,
                "relative_distance": relative,
                "probe_accuracy": measurement.accuracy,
                "accuracy_gap": gap,
                "seconds": elapsed,
                "decision": decision,
            }
        )
        if decision is not None:
            trainer.stop(decision)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state.get("records", []))
        self.seconds = float(state.get("seconds", 0.0))
