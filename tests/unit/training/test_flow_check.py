"""InfCoP's stopping rule: scripted flow sequences, relative ε, the accuracy and budget criteria."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Splits, split_validation
from secateurs.errors import UsageError
from secateurs.scoring.flow import FlowMeasurement
from secateurs.training.flow_check import FlowCheck, StoppingRule, check_steps
from secateurs.training.loop import Trainer

REFERENCE = torch.tensor([0.3, 0.4], dtype=torch.float64)  # ‖φ_ref‖ = 0.5


def test_rule_decides_flow_first_then_accuracy() -> None:
    rule = StoppingRule(epsilon=0.1, reference_accuracy=0.8)
    assert rule.decide(0.2, 0.4, 0.5) is None
    assert rule.decide(0.09, 0.18, 0.5) == "flow"
    assert rule.decide(0.2, 0.4, 0.8) == "accuracy"
    assert rule.decide(0.05, 0.1, 0.9) == "flow"
    assert rule.decide(float("nan"), float("nan"), 0.5) is None  # NaN never passes the flow test
    relative = StoppingRule(epsilon=0.1, relative=True)
    assert relative.decide(0.06, 0.12, 0.99) is None  # accuracy criterion off
    assert relative.decide(0.2, 0.09, 0.0) == "flow"


def test_epsilon_must_be_positive() -> None:
    with pytest.raises(UsageError, match="epsilon must be > 0"):
        StoppingRule(epsilon=0.0)


def test_check_steps_at_fractional_epochs() -> None:
    assert check_steps(0.5, 10, 30) == [5, 10, 15, 20, 25]
    assert check_steps(0.5, 10, 30, at_end=True) == [5, 10, 15, 20, 25, 30]
    assert check_steps(1.0, 7, 21) == [7, 14]
    assert check_steps(0.25, 3, 6) == [1, 2, 3, 4, 5]  # round(0.75)=1, round(1.5)=2, round(2.25)=2 is dropped
    assert check_steps(3.0, 10, 30) == []
    assert check_steps(3.0, 10, 30, at_end=True) == [30]


@pytest.fixture(scope="module")
def splits() -> Splits:
    # 1100 training images → 1008 train; batch 100 → 10 steps per epoch (drop_last).
    return split_validation(make_synthetic(num_train=1100, num_test=100))


def scripted(distances: Sequence[float], accuracies: Sequence[float] | None = None) -> tuple[list[int], object]:
    """A measure that returns φ at the scripted distances (along a fixed direction) from REFERENCE."""
    calls: list[int] = []
    direction = torch.tensor([1.0, 0.0], dtype=torch.float64)

    def measure(_model: nn.Module) -> FlowMeasurement:
        index = len(calls)
        calls.append(index)
        accuracy = accuracies[index] if accuracies is not None else 0.0
        return FlowMeasurement(REFERENCE + distances[index] * direction, accuracy, 0.0)

    return calls, measure


def train_with(splits: Splits, check: FlowCheck, epochs: float = 3.0) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    config = TrainConfig(epochs=epochs, batch_size=100, lr=0.01, schedule="constant")
    trainer = Trainer(model, splits, config, callbacks=[check])
    trainer.fit()
    return trainer


def test_stops_exactly_at_the_first_check_below_epsilon(splits: Splits) -> None:
    calls, measure = scripted([0.5, 0.3, 0.2, 0.09, 0.01, 0.0])
    check = FlowCheck(measure, REFERENCE, check_every=0.5, rule=StoppingRule(epsilon=0.1))  # type: ignore[arg-type]
    trainer = train_with(splits, check)
    assert len(calls) == 4
    assert trainer.stop_reason == "flow"
    assert trainer.step == 20 and trainer.epochs_done == pytest.approx(2.0)
    assert [r["epochs"] for r in check.records] == [0.5, 1.0, 1.5, 2.0]
    assert [r["distance"] for r in check.records] == pytest.approx([0.5, 0.3, 0.2, 0.09])
    assert [r["decision"] for r in check.records] == [None, None, None, "flow"]


def test_relative_epsilon_divides_by_the_reference_norm(splits: Splits) -> None:
    # ‖φ_ref‖ = 0.5: relative distances 0.4, 0.24, 0.16 → the first below 0.2 is the third check.
    calls, measure = scripted([0.2, 0.12, 0.08, 0.0, 0.0])
    rule = StoppingRule(epsilon=0.2, relative=True)
    check = FlowCheck(measure, REFERENCE, check_every=0.5, rule=rule)  # type: ignore[arg-type]
    trainer = train_with(splits, check)
    assert len(calls) == 3 and trainer.stop_reason == "flow" and trainer.step == 15
    assert [r["relative_distance"] for r in check.records] == pytest.approx([0.4, 0.24, 0.16])


def test_accuracy_reaching_the_reference_stops(splits: Splits) -> None:
    calls, measure = scripted([1.0] * 5, accuracies=[0.5, 0.7, 0.79, 0.8, 0.9])
    rule = StoppingRule(epsilon=0.1, reference_accuracy=0.8)
    check = FlowCheck(measure, REFERENCE, check_every=0.5, rule=rule, reference_accuracy=0.8)  # type: ignore[arg-type]
    trainer = train_with(splits, check)
    assert len(calls) == 4 and trainer.stop_reason == "accuracy" and trainer.step == 20
    assert [r["accuracy_gap"] for r in check.records] == pytest.approx([0.3, 0.1, 0.01, 0.0])


def test_budget_ends_training_without_a_check_at_the_end(splits: Splits) -> None:
    calls, measure = scripted([1.0] * 10)
    check = FlowCheck(measure, REFERENCE, check_every=0.5, rule=StoppingRule(epsilon=0.1))  # type: ignore[arg-type]
    trainer = train_with(splits, check, epochs=1.5)
    assert trainer.stop_reason == "budget" and trainer.step == 15
    assert len(calls) == 2  # checks after 0.5 and 1.0 epochs; none at the end of the budget


def test_monitor_logs_every_check_including_the_end_and_never_stops(splits: Splits) -> None:
    calls, measure = scripted([0.0] * 10)
    check = FlowCheck(measure, REFERENCE, check_every=0.5, check_at_end=True)  # type: ignore[arg-type]
    trainer = train_with(splits, check, epochs=1.5)
    assert trainer.stop_reason == "budget" and len(calls) == 3
    assert [r["epochs"] for r in check.records] == [0.5, 1.0, 1.5]
