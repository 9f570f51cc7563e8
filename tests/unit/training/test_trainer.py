"""The trainer: learning on the synthetic dataset, LR schedules, callbacks, bit-exact resume, divergence,
masked training and BatchNorm re-calibration."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Splits, split_validation
from secateurs.errors import TrainingDiverged
from secateurs.sparsity.masks import MaskStore
from secateurs.training.batchnorm import recalibrate_batchnorm_
from secateurs.training.checkpoint import load_checkpoint
from secateurs.training.loop import Callback, Trainer, epoch_steps
from secateurs.training.optim import build_optimizer, learning_rate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_validation(make_synthetic(num_train=1200, num_test=200, seed=0))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def small_conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def conv_masks(model: nn.Module, seed: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(model.get_parameter(name).shape, generator=generator) < 0.4
        for name in ("0.weight", "3.weight", "5.weight")
    }


# ----------------------------------------------------------------------------------------- learning
def test_split_sizes(splits: Splits) -> None:
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1100, 100, 200)


def test_small_mlp_learns_the_synthetic_task(splits: Splits) -> None:
    trainer = Trainer(mlp(), splits, TrainConfig(epochs=2, batch_size=64, lr=0.05))
    summary = trainer.fit()
    assert trainer.steps_per_epoch == 1100 // 64 == 17
    assert summary.steps == 34 and summary.epochs == 2.0 and summary.stop_reason == "budget"
    assert [record["epoch"] for record in summary.history] == [1, 2]
    assert [record["step"] for record in summary.history] == [17, 34]
    assert summary.final["val_accuracy"] > 0.9
    assert trainer.evaluate("val").accuracy == summary.final["val_accuracy"]
    assert not trainer.channels_last  # no conv layer


# -------------------------------------------------------------------------------------- LR schedules
def lr(step: int, steps_per_epoch: int = 10, **fields: Any) -> float:
    return learning_rate(TrainConfig(lr=0.1, **fields), step, steps_per_epoch)


def test_constant_schedule() -> None:
    assert [lr(step, epochs=3, schedule="constant") for step in (0, 7, 29, 40)] == [0.1] * 4


def test_step_schedule_default_and_custom_milestones() -> None:
    # 4 epochs of 10 steps: default milestones at 50 % and 75 % = steps 20 and 30
    values = [lr(step, epochs=4, schedule="step") for step in (0, 19, 20, 29, 30, 39)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)
    custom = [lr(step, epochs=4, schedule="step", milestones=(1, 3), gamma=0.5) for step in (9, 10, 29, 30)]
    assert custom == pytest.approx([0.1, 0.05, 0.05, 0.025], rel=1e-12)


def test_cosine_schedule() -> None:
    # 2 epochs of 10 steps: lr · ½(1 + cos(π t / 20))
    assert lr(0, epochs=2, schedule="cosine") == 0.1
    assert lr(10, epochs=2, schedule="cosine") == pytest.approx(0.05, rel=1e-12)
    assert lr(5, epochs=2, schedule="cosine") == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert lr(19, epochs=2, schedule="cosine") == pytest.approx(0.05 * (1 + math.cos(math.pi * 19 / 20)), rel=1e-12)
    assert lr(25, epochs=2, schedule="cosine") == 0.0  # past the end: clamped at 0


def test_warmup_then_cosine() -> None:
    # warm-up over 5 steps: 0.1·(t+1)/5; then cosine over the remaining 15 steps
    warm = [lr(step, epochs=2, schedule="cosine", warmup_epochs=0.5) for step in range(5)]
    assert warm == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1], rel=1e-12)
    assert lr(5, epochs=2, schedule="cosine", warmup_epochs=0.5) == 0.1
    assert lr(10, epochs=2, schedule="cosine", warmup_epochs=0.5) == pytest.approx(
        0.05 * (1 + math.cos(math.pi * 5 / 15)), rel=1e-12
    )
    assert lr(2, epochs=2, schedule="constant", warmup_epochs=0.5) == pytest.approx(0.06, rel=1e-12)


def test_trainer_applies_the_schedule_at_every_step(splits: Splits) -> None:
    config = TrainConfig(epochs=2, batch_size=32, train_subset=100, schedule="step", milestones=(1,), gamma=0.5, lr=0.1)
    seen: list[float] = []

    class Recorder(Callback):
        def on_step_end(self, trainer: Trainer) -> None:
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    Trainer(mlp(), splits, config, callbacks=[Recorder()]).fit()
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05], rel=1e-12)


@pytest.mark.parametrize(("epochs", "steps", "records"), [(0.3, 5, 1), (1.25, 21, 2), (2.0, 34, 2), (0.0, 0, 0)])
def test_fractional_epochs_give_rounded_steps(splits: Splits, epochs: float, steps: int, records: int) -> None:
    trainer = Trainer(mlp(), splits, TrainConfig(epochs=epochs, batch_size=64, eval_subset=50))
    summary = trainer.fit()
    assert trainer.total_steps == round(epochs * 17) == steps
    assert summary.steps == steps
    assert summary.epochs == pytest.approx(steps / 17, abs=1e-12)
    assert len(summary.history) == records


# ------------------------------------------------------------------------------------------- callbacks
class Recording(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[str, int, int]] = []
        self.stop_at = stop_at

    def on_train_begin(self, trainer: Trainer) -> None:
        self.events.append(("train_begin", trainer.step, trainer.epoch))

    def on_step_begin(self, trainer: Trainer) -> None:
        self.events.append(("step_begin", trainer.step, trainer.epoch))

    def on_step_end(self, trainer: Trainer) -> None:
        self.events.append(("step_end", trainer.step, trainer.epoch))
        if self.stop_at is not None and trainer.step == self.stop_at:
            trainer.stop("enough")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.events.append(("epoch_end", record["step"], record["epoch"]))
        record["extra"] = trainer.step

    def on_train_end(self, trainer: Trainer) -> None:
        self.events.append(("train_end", trainer.step, trainer.epoch))


def test_callbacks_are_called_in_order_with_step_counts(splits: Splits) -> None:
    config = TrainConfig(epochs=2, batch_size=32, train_subset=100, eval_subset=20)  # 3 steps per epoch
    first, second = Recording(), Recording()
    summary = Trainer(mlp(), splits, config, callbacks=[first, second]).fit()
    epoch_one = [event for step in range(3) for event in (("step_begin", step, 0), ("step_end", step + 1, 0))]
    epoch_two = [event for step in range(3, 6) for event in (("step_begin", step, 1), ("step_end", step + 1, 1))]
    expected = [
        ("train_begin", 0, 0),
        *epoch_one,
        ("epoch_end", 3, 1),
        *epoch_two,
        ("epoch_end", 6, 2),
        ("train_end", 6, 2),
    ]
    assert first.events == expected and second.events == expected
    assert [record["extra"] for record in summary.history] == [3, 6]


def test_stop_ends_the_run_after_the_current_step(splits: Splits) -> None:
    config = TrainConfig(epochs=3, batch_size=32, train_subset=100, eval_subset=20)
    recording = Recording(stop_at=4)
    summary = Trainer(mlp(), splits, config, callbacks=[recording]).fit()
    assert summary.steps == 4 and summary.stop_reason == "enough"
    assert [record["step"] for record in summary.history] == [3, 4]
    assert [event[0] for event in recording.events].count("step_begin") == 4
    assert recording.events[-2:] == [("epoch_end", 4, 2), ("train_end", 4, 2)]


# ---------------------------------------------------------------------------------------------- resume
class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] == self.epoch:
            trainer.stop("interrupted")


class Interrupted(Exception):
    """Stands for a kill: raised by `Crash` in the middle of an epoch."""


class Crash(Callback):
    """Raise in the middle of an epoch, as a killed process would stop."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, trainer: Trainer) -> None:
        if trainer.step == self.at_step:
            raise Interrupted


RESUME_CONFIGS = {
    "sgd-momentum-wd": TrainConfig(epochs=3, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-step": TrainConfig(epochs=3, batch_size=64, lr=0.05, nesterov=True, schedule="step"),
    "adam": TrainConfig(epochs=3, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=1e-4),
    "adamw-warmup": TrainConfig(epochs=3, batch_size=64, lr=1e-3, optimizer="adamw", warmup_epochs=0.5),
}


def masked_conv(masks: dict[str, torch.Tensor] | None, seed: int) -> tuple[nn.Module, MaskStore | None]:
    model = small_conv(seed)
    if masks is None:
        return model, None
    store = MaskStore(model)
    store.update_(masks)
    return model, store


def final_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("interruption", ["stop-after-epoch-2", "crash-in-epoch-3"])
@pytest.mark.parametrize("config_name", sorted(RESUME_CONFIGS))
def test_resume_ends_with_the_same_weights(
    splits: Splits, tmp_path: Path, config_name: str, interruption: str, masked: bool
) -> None:
    config = RESUME_CONFIGS[config_name].with_(train_subset=400, eval_subset=50)  # 6 steps per epoch
    masks = conv_masks(small_conv()) if masked else None

    model_a, store_a = masked_conv(masks, seed=0)
    trainer_a = Trainer(model_a, splits, config, seed=3, masks=store_a, checkpoint_dir=tmp_path / "a")
    summary_a = trainer_a.fit()
    assert trainer_a.channels_last and summary_a.steps == 18

    model_b, store_b = masked_conv(masks, seed=0)
    callback = StopAfterEpoch(2) if interruption == "stop-after-epoch-2" else Crash(at_step=2 * 6 + 3)
    first = Trainer(model_b, splits, config, seed=3, masks=store_b, checkpoint_dir=tmp_path / "b", callbacks=[callback])
    if interruption == "crash-in-epoch-3":
        with pytest.raises(Interrupted):
            first.fit()
    else:
        assert first.fit().steps == 12
    del first, model_b, store_b

    model_c, store_c = masked_conv(None, seed=11)  # a new instance, other initial weights, no masks yet
    if masked:
        store_c = MaskStore(model_c)
    resumed = Trainer(model_c, splits, config, seed=3, masks=store_c, checkpoint_dir=tmp_path / "b")
    summary_c = resumed.fit(resume=True)
    assert summary_c.steps == 18
    expected, got = final_state(model_a), final_state(model_c)
    assert list(expected) == list(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert [r["val_accuracy"] for r in summary_c.history] == [r["val_accuracy"] for r in summary_a.history]
    assert [r["train_loss"] for r in summary_c.history] == [r["train_loss"] for r in summary_a.history]
    if masked:
        assert store_c is not None and masks is not None
        for name, mask in masks.items():
            assert torch.equal(store_c.get(name), mask)
            original = store_c.original(name)
            assert int((original[~mask] != 0).sum()) == 0
            for value in resumed.optimizer.state[original].values():
                if isinstance(value, torch.Tensor) and value.shape == original.shape:
                    assert int((value[~mask] != 0).sum()) == 0


def test_resume_without_checkpoint_starts_from_scratch(splits: Splits, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=64, train_subset=256, eval_subset=20)
    model_a, model_b = mlp(0), mlp(0)
    Trainer(model_a, splits, config).fit()
    Trainer(model_b, splits, config, checkpoint_dir=tmp_path / "none").fit(resume=True)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


# ------------------------------------------------------------------------------------------ divergence
class Poison(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, trainer: Trainer) -> None:
        if trainer.step == self.at_step:
            with torch.no_grad():
                trainer.model.get_parameter("1.weight").fill_(float("nan"))


def test_nan_loss_raises_training_diverged_and_keeps_the_checkpoint(splits: Splits, tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=32, train_subset=128, eval_subset=20)  # 4 steps per epoch
    directory = tmp_path / "checkpoints"
    trainer = Trainer(mlp(), splits, config, checkpoint_dir=directory, callbacks=[Poison(at_step=6)])
    message = f"the loss became nan at epoch 2, step 7; the last good checkpoint is in {directory}"
    with pytest.raises(TrainingDiverged, match=re.escape(message)):
        trainer.fit()
    assert sorted(path.name for path in (directory / "latest").iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    fresh = mlp(5)
    state = load_checkpoint(directory, fresh, build_optimizer(fresh.parameters(), config), None)
    assert state is not None and state["step"] == 4 and state["epoch"] == 1
    assert bool(torch.isfinite(fresh.get_parameter("1.weight")).all())


def test_nan_loss_without_checkpoint_dir(splits: Splits) -> None:
    config = TrainConfig(epochs=1, batch_size=32, train_subset=128, eval_subset=20)
    with pytest.raises(TrainingDiverged, match="the loss became nan at epoch 1, step 2; stopping"):
        Trainer(mlp(), splits, config, callbacks=[Poison(at_step=1)]).fit()


# ------------------------------------------------------------------------------------- masked training
def test_masked_training_keeps_masked_weights_zero(splits: Splits) -> None:
    model = small_conv()
    masks = conv_masks(model)
    store = MaskStore(model)
    store.update_(masks)
    before = {name: store.original(name).detach().clone() for name in masks}
    config = TrainConfig(epochs=1, batch_size=64, train_subset=320, eval_subset=20, weight_decay=1e-3)
    trainer = Trainer(model, splits, config, masks=store)
    trainer.fit()
    for name, mask in masks.items():
        original = store.original(name)
        assert int((original[~mask] != 0).sum()) == 0
        assert int((trainer.optimizer.state[original]["momentum_buffer"][~mask] != 0).sum()) == 0
        assert not torch.equal(original[mask], before[name][mask])
    assert store.counts() == {name: (int(mask.sum()), mask.numel()) for name, mask in masks.items()}


# ------------------------------------------------------------------------------------------- batchnorm
def test_recalibrate_batchnorm_gives_the_exact_statistics_of_the_data() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, momentum=0.3), nn.ReLU(), nn.Flatten())
    model.append(nn.Linear(3 * 4 * 4, 5)).append(nn.BatchNorm1d(5))
    generator = torch.Generator().manual_seed(1)
    sizes = (5, 7, 3)  # unequal batches: averaging per-batch statistics would be wrong
    batches = [(torch.randn(n, 2, 6, 6, generator=generator) * 3 + 1, torch.zeros(n, dtype=torch.int64)) for n in sizes]
    model.eval()
    count = recalibrate_batchnorm_(model, batches)
    assert count == 2
    assert not model.training and model[1].momentum == 0.3 and model[5].momentum == 0.1
    assert int(model[1].num_batches_tracked) == 3
    statistics = {key: value.clone() for key, value in model.state_dict().items() if "running" in key}
    with torch.no_grad():
        conv = torch.cat([model[0](x) for x, _ in batches])
        expected_mean = conv.double().mean(dim=(0, 2, 3))
        expected_var = conv.double().transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True)
        # the second BN sees, batch by batch, the activations of a network normalised with batch statistics
        model.train()
        hidden = torch.cat([model[:5](x) for x, _ in batches])
        model.eval()
    tolerance = {"rtol": 1e-6, "atol": 1e-7}
    assert torch.allclose(statistics["1.running_mean"].double(), expected_mean, **tolerance)
    assert torch.allclose(statistics["1.running_var"].double(), expected_var, **tolerance)
    assert torch.allclose(statistics["5.running_mean"].double(), hidden.double().mean(0), **tolerance)
    assert torch.allclose(statistics["5.running_var"].double(), hidden.double().var(0, unbiased=True), **tolerance)


def test_recalibrate_batchnorm_without_batchnorm_is_a_no_op() -> None:
    model = mlp()
    state = final_state(model)
    assert recalibrate_batchnorm_(model, [(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64))]) == 0
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize(
    ("subset", "batch", "epochs"),
    [(None, 64, 2.0), (128, 32, 1.0), (100, 32, 0.5), (20, 32, 3.0), (130, 64, 1.25)],
)
def test_epoch_steps_counts_what_the_trainer_takes(
    splits: Splits, subset: int | None, batch: int, epochs: float
) -> None:
    config = TrainConfig(epochs=epochs, batch_size=batch, train_subset=subset)
    trainer = Trainer(mlp(), splits, config)
    assert epoch_steps(splits, config) == (trainer.steps_per_epoch, trainer.total_steps)
