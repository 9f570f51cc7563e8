"""Budgets in optimizer steps: exact step counts, schedules in steps, validation every N steps, and a
bit-exact resume from a checkpoint taken inside an epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Splits, split_validation
from secateurs.errors import ConfigError, UsageError
from secateurs.training.loop import Callback, Trainer, budget_epochs, epoch_steps
from secateurs.training.optim import learning_rate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_validation(make_synthetic(num_train=1200, num_test=200, seed=0))


@pytest.fixture(scope="module")
def small_splits() -> Splits:
    return split_validation(make_synthetic(num_train=480, num_test=100, seed=1))


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10))


class Steps(Callback):
    """Counts optimizer steps and records the LR each one used."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_step_end(self, trainer: Trainer) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


# ------------------------------------------------------------------------------------------ the config
def test_budget_is_epochs_or_steps_never_both() -> None:
    assert TrainConfig().epochs == 5.0 and TrainConfig().steps is None
    by_steps = TrainConfig(steps=40)
    assert by_steps.epochs is None and by_steps.budget_unit == "steps" and by_steps.total_steps(17) == 40
    assert TrainConfig(epochs=2).total_steps(17) == 34
    with pytest.raises(ValueError, match=r"either in epochs \(2\) or in steps \(40\), not both"):
        TrainConfig(epochs=2, steps=40)
    assert TrainConfig.model_validate(by_steps.model_dump()) == by_steps  # a dump round-trips
    assert not TrainConfig(steps=0).has_budget and not TrainConfig(epochs=0).has_budget
    assert TrainConfig(steps=1).has_budget


def test_with_switches_the_budget_unit() -> None:
    by_steps = TrainConfig(steps=40, warmup_steps=5)
    assert by_steps.with_(epochs=1.5).epochs == 1.5 and by_steps.with_(epochs=1.5).steps is None
    assert TrainConfig(epochs=2).with_(steps=7).steps == 7
    assert by_steps.with_(warmup_epochs=0.5).warmup_steps is None
    assert TrainConfig(warmup_epochs=1).with_(warmup_steps=3).warmup_epochs == 0.0


def test_warmup_in_steps_is_checked() -> None:
    with pytest.raises(ValueError, match=r"warmup_steps \(50\) exceeds steps \(40\)"):
        TrainConfig(steps=40, warmup_steps=50)
    with pytest.raises(ValueError, match="warm-up either in epochs"):
        TrainConfig(warmup_epochs=1, warmup_steps=3)


def test_warmup_longer_than_the_budget_is_refused_by_the_trainer(splits: Splits) -> None:
    config = TrainConfig(steps=10, warmup_epochs=1, batch_size=64)  # 17 steps of warm-up > 10
    with pytest.raises(UsageError, match=r"warm-up \(17 steps\) exceeds the training budget \(10 steps"):
        Trainer(mlp(), splits, config)


def test_lr_schedule_in_steps_does_not_depend_on_the_epoch_length() -> None:
    config = TrainConfig(steps=20, lr=0.1, schedule="step", milestones=(10, 15), gamma=0.5, warmup_steps=4)
    for steps_per_epoch in (3, 17, 1000):
        values = [learning_rate(config, step, steps_per_epoch) for step in (0, 3, 4, 9, 10, 14, 15, 19)]
        assert values == pytest.approx([0.025, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rel=1e-12)
    default = TrainConfig(steps=40, lr=0.1, schedule="step")  # milestones at 50 % and 75 %: steps 20 and 30
    assert [learning_rate(default, s, 7) for s in (19, 20, 29, 30)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    cosine = TrainConfig(steps=20, lr=0.1)
    assert learning_rate(cosine, 10, 3) == pytest.approx(0.05, rel=1e-12)


# ------------------------------------------------------------------------------------------ the trainer
@pytest.mark.parametrize("steps", [1, 16, 17, 40])
def test_a_steps_budget_takes_exactly_that_many_steps(splits: Splits, steps: int) -> None:
    counter = Steps()
    trainer = Trainer(mlp(), splits, TrainConfig(steps=steps, batch_size=64, eval_subset=40), callbacks=[counter])
    summary = trainer.fit()
    assert trainer.steps_per_epoch == 17
    assert len(counter.lrs) == summary.steps == trainer.total_steps == steps
    assert summary.epochs == pytest.approx(steps / 17, abs=1e-12)
    assert epoch_steps(splits, TrainConfig(steps=steps, batch_size=64)) == (17, steps)
    assert budget_epochs(splits, TrainConfig(steps=steps, batch_size=64)) == steps / 17
    # validation at every epoch end and after the last step
    expected = [17 * k for k in range(1, steps // 17 + 1)]
    if steps % 17:
        expected.append(steps)
    assert [record["step"] for record in summary.history] == expected
    assert summary.history[-1]["epochs"] == round(steps / 17, 6)


def test_the_same_steps_budget_on_two_dataset_sizes(splits: Splits, small_splits: Splits) -> None:
    config = TrainConfig(steps=30, batch_size=64, schedule="step", milestones=(12, 24), warmup_steps=3, lr=0.1)
    counters = []
    for data in (splits, small_splits):
        counter = Steps()
        trainer = Trainer(mlp(), data, config.with_(eval_subset=40), callbacks=[counter])
        summary = trainer.fit()
        counters.append(counter)
        assert summary.steps == 30 and len(counter.lrs) == 30
    assert (len(splits.train), len(small_splits.train)) == (1100, 440)  # 17 and 6 steps per epoch
    assert counters[0].lrs == counters[1].lrs  # the schedule is one of steps, not of epochs


def test_eval_every_validates_every_n_steps_and_at_the_end(splits: Splits) -> None:
    config = TrainConfig(steps=40, eval_every=15, batch_size=64, eval_subset=40)
    summary = Trainer(mlp(), splits, config).fit()
    assert [record["step"] for record in summary.history] == [15, 30, 40]
    assert [record["epoch"] for record in summary.history] == [1, 2, 3]  # the epoch each point falls in
    by_epochs = Trainer(mlp(), splits, TrainConfig(epochs=2, eval_every=17, batch_size=64, eval_subset=40)).fit()
    assert [record["step"] for record in by_epochs.history] == [17, 34]  # a point on an epoch end counts once


class Interrupted(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, trainer: Trainer) -> None:
        if trainer.step == self.step:
            raise Interrupted


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("crash_at", [23, 31])  # after the checkpoints at steps 20 and 30, both inside epochs
def test_a_resumed_steps_run_equals_an_uninterrupted_one(splits: Splits, tmp_path: Path, crash_at: int) -> None:
    config = TrainConfig(
        steps=45, eval_every=10, batch_size=64, lr=0.05, warmup_steps=5, augment="crop-flip", eval_subset=40
    )  # 17 steps per epoch: checkpoints at 10, 20, 30, 40 fall inside epochs; dropout and crop-flip draw RNG

    def run(directory: Path, callbacks: list[Callback], *, seed: int = 0, resume: bool = False) -> Any:
        model = mlp(seed, dropout=0.3)
        trainer = Trainer(model, splits, config, seed=5, checkpoint_dir=directory, callbacks=callbacks)
        return model, trainer.fit(resume=resume)

    reference, summary_a = run(tmp_path / "a", [])
    with pytest.raises(Interrupted):
        run(tmp_path / "b", [CrashAt(crash_at)])
    resumed, summary_b = run(tmp_path / "b", [], seed=9, resume=True)  # other initial weights: all restored
    assert summary_b.steps == summary_a.steps == 45
    expected, got = state(reference), state(resumed)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert [r["step"] for r in summary_b.history] == [10, 20, 30, 40, 45]
    assert [r["val_accuracy"] for r in summary_b.history] == [r["val_accuracy"] for r in summary_a.history]
    assert [r["train_loss"] for r in summary_b.history] == [r["train_loss"] for r in summary_a.history]


def test_recipe_budgets_in_steps_validate_as_one_line() -> None:
    from secateurs.config import validate

    with pytest.raises(ConfigError, match=r"^training: give the budget either in epochs"):
        validate(TrainConfig, {"epochs": 1, "steps": 10}, "training")
