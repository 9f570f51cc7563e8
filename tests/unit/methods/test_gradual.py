"""Gradual pruning: cubic schedule, frozen masks, hard masks, realised sparsity, resumption."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import split_validation
from secateurs.errors import ConfigError, UsageError
from secateurs.methods import METHODS
from secateurs.methods.gradual import GradualMethod, GradualOptions, resolve_schedule
from secateurs.methods.gradual_sparsifier import GradualSparsifier
from secateurs.sparsity.granularity import granularity
from secateurs.sparsity.schedules import CubicSchedule
from secateurs.training.loop import Callback, Trainer


class SmallNet(nn.Module):
    """conv 1→4 (first, dense) → conv 4→8 → conv 8→8 → 1×1 conv 8→8 → GAP → linear 8→3 (last, dense)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 1),
        )
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.relu(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def make_model(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    return SmallNet()


def batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 1, 6, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator))
        for _ in range(count)
    ]


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, sparsifier: GradualSparsifier, data: list) -> None:
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        sparsifier.step()


# ------------------------------------------------------------------------------------ schedule
def test_cubic_schedule_hits_its_endpoints_and_update_steps_exactly() -> None:
    schedule = CubicSchedule(final=0.8, start=10, end=40, every=10, initial=0.1)
    assert schedule.sparsity(0) == 0.1 and schedule.sparsity(10) == 0.1
    assert schedule.sparsity(40) == 0.8 and schedule.sparsity(1000) == 0.8
    # halfway: 0.8 + (0.1 − 0.8)(1 − ½)³ = 0.8 − 0.7/8
    assert schedule.sparsity(25) == pytest.approx(0.8 - 0.7 / 8)
    assert [t for t in range(60) if schedule.is_update_step(t)] == [10, 20, 30, 40]
    uneven = CubicSchedule(final=0.5, start=0, end=25, every=10)
    assert [t for t in range(60) if uneven.is_update_step(t)] == [0, 10, 20, 25]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start": 20, "end": 10, "every": 5}, r"end \(10\) must come after start \(20\)"),
        ({"start": 0, "end": 10, "every": 0}, "must be ≥ 1 step, got 0"),
        ({"start": 0, "end": 10, "every": 5, "final": 1.0}, r"in \[0, 1\)"),
    ],
)
def test_bad_schedules_name_the_accepted_range(fields: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CubicSchedule(**{"final": 0.5, **fields})


def test_schedule_options_resolve_epochs_and_fractions_to_steps() -> None:
    by_epoch = resolve_schedule(0.6, GradualOptions(start_epoch=1, end_epoch=6, every=50), 100, 1200)
    assert (by_epoch.start, by_epoch.end, by_epoch.every, by_epoch.final) == (100, 600, 50, 0.6)
    by_fraction = resolve_schedule(0.6, GradualOptions(start=0.0, end=0.5), 100, 1200)
    assert (by_fraction.start, by_fraction.end) == (0, 600)
    with pytest.raises(UsageError, match=r"accepted: end_epoch ≤ 12"):
        resolve_schedule(0.6, GradualOptions(end_epoch=13), 100, 1200)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start": 0.6, "end": 0.5}, r"accepted: 0 ≤ start < end ≤ 1"),
        ({"start_epoch": 6, "end_epoch": 3}, "accepted: start_epoch < end_epoch"),
        ({"every": 0}, "every"),
        ({"colour": 1}, "unknown key 'colour'"),
    ],
)
def test_bad_gradual_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        METHODS.get("campfire").parse_options(options)


# ---------------------------------------------------------------------------------- sparsifier
def test_masks_freeze_at_end_and_masked_weights_stay_exactly_zero() -> None:
    model = make_model()
    optimizer = sgd(model)
    sparsifier = sec.gradual(
        model,
        "campfire",
        granularity="window",
        sparsity=2 / 3,
        start_step=2,
        end_step=20,
        every=3,
        optimizer=optimizer,
        fallback="n:m",
    )
    data = batches(45)
    train_steps(model, optimizer, sparsifier, data[:20])
    assert sparsifier.masks.frozen and sparsifier.step_count == 20
    at_end = {name: mask.clone() for name, mask in sparsifier.masks.items()}
    train_steps(model, optimizer, sparsifier, data[20:])
    for name, mask in sparsifier.masks.items():
        assert torch.equal(mask, at_end[name]), name
        original = sparsifier.masks.original(name)
        assert torch.count_nonzero(original[~mask]) == 0, name
        momentum = optimizer.state[original]["momentum_buffer"]
        assert torch.count_nonzero(momentum[~mask]) == 0, name
    with pytest.raises(UsageError, match="frozen"):
        name = next(iter(at_end))
        sparsifier.masks.set_(name, torch.ones_like(at_end[name]))
    x = data[0][0]
    before = model(x)
    baked = sparsifier.squash_mask()
    assert not any("parametrizations" in key for key in baked.state_dict())
    assert torch.equal(baked(x), before)
    for name, mask in at_end.items():
        module_name, _, tensor_name = name.rpartition(".")
        assert torch.count_nonzero(getattr(baked.get_submodule(module_name), tensor_name)[~mask]) == 0


def test_realised_sparsity_is_the_documented_rounding_and_updates_nest() -> None:
    model = make_model()
    optimizer = sgd(model)
    sparsifier = sec.gradual(
        model,
        "campfire",
        granularity="window",
        sparsity=0.7,
        start_step=0,
        end_step=12,
        every=4,
        optimizer=optimizer,
        fallback="n:m",
    )
    assert sparsifier.granularities["body.0.weight"].name == "window"
    assert sparsifier.granularities["body.5.weight"].name == "n:m"  # the 1×1 conv
    assert "stem.weight" not in sparsifier.granularities and "classifier.weight" not in sparsifier.granularities
    previous = {name: mask.clone() for name, mask in sparsifier.masks.items()}
    for x, y in batches(16):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        sparsifier.step()
        for name, mask in sparsifier.masks.items():
            assert not (mask & ~previous[name]).any(), "a removed weight came back"
            previous[name] = mask.clone()
    info = sparsifier.info()
    # 70 % rounds to 3 of 9 taps (66.7 %) in windows and to 1 of 4 (75 %) in N:M groups of 4.
    assert info["layers"]["body.0.weight"]["sparsity"] == pytest.approx(6 / 9)
    assert info["layers"]["body.3.weight"]["sparsity"] == pytest.approx(6 / 9)
    assert info["layers"]["body.5.weight"]["sparsity"] == pytest.approx(0.75)
    assert [entry["step"] for entry in sparsifier.history] == [0, 4, 8, 12]
    assert sparsifier.history[0]["target"] == 0.0 and sparsifier.history[-1]["target"] == 0.7


def _run(
    steps: int, data: list, state: dict | None = None
) -> tuple[nn.Module, GradualSparsifier, torch.optim.Optimizer]:
    model = make_model()
    optimizer = sgd(model)
    sparsifier = sec.gradual(
        model, "campfire", granularity="kernel", sparsity=0.5, start_step=1, end_step=15, every=2, optimizer=optimizer
    )
    if state is not None:
        sparsifier.load_state_dict(state["sparsifier"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    train_steps(model, optimizer, sparsifier, data[sparsifier.step_count : steps])
    return model, sparsifier, optimizer


def test_resuming_the_sparsifier_mid_schedule_matches_an_uninterrupted_run() -> None:
    data = batches(24)
    whole, whole_sparsifier, _ = _run(24, data)
    half, half_sparsifier, half_optimizer = _run(9, data)
    assert not half_sparsifier.masks.frozen
    state = {
        "sparsifier": half_sparsifier.state_dict(),
        "model": copy.deepcopy(half.state_dict()),
        "optimizer": copy.deepcopy(half_optimizer.state_dict()),
    }
    resumed, resumed_sparsifier, _ = _run(24, data, state)
    assert resumed_sparsifier.history == whole_sparsifier.history
    for name, mask in whole_sparsifier.masks.items():
        assert torch.equal(resumed_sparsifier.masks.get(name), mask)
    for (name, value), (_, other) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(value, other), name


def test_unreachable_targets_and_uncuttable_layers_fail_before_training() -> None:
    with pytest.raises(UsageError, match=r"body.0.weight: .*accepted: \[0, 0.9444\)"):
        sec.gradual(make_model(), "campfire", granularity="window", sparsity=0.95, end_step=10, fallback="n:m")
    with pytest.raises(UsageError, match=r"body.5.weight.*N:M"):
        sec.gradual(make_model(), "campfire", granularity="window", sparsity=0.5, end_step=10)
    with pytest.raises(UsageError, match="keeps 2 of every 4"):
        sec.gradual(make_model(), "campfire", granularity="2:4", sparsity=0.7, end_step=10)
    with pytest.raises(UsageError, match="must come after start"):
        sec.gradual(make_model(), "campfire", granularity="element", sparsity=0.5, start_step=10, end_step=5)
    with pytest.raises(UsageError, match="gradual method"):
        sec.gradual(make_model(), "magnitude", sparsity=0.5, end_step=10)
    with pytest.raises(UsageError, match="gmp is unstructured"):
        sec.gradual(make_model(), "gmp", granularity="window", sparsity=0.5, end_step=10)


def test_gmp_prunes_layerwise_or_globally_to_the_exact_count() -> None:
    model = make_model()
    sparsifier = sec.gradual(model, "gmp", sparsity=0.8, start_step=0, end_step=2, every=1)
    sparsifier.step()
    sparsifier.step()
    for name, (kept, total) in sparsifier.masks.counts().items():
        assert kept == round(0.2 * total), name
    global_model = make_model()
    global_sparsifier = sec.gradual(global_model, "gmp", sparsity=0.8, scope="global", end_step=1, every=1)
    global_sparsifier.step()
    kept = sum(k for k, _ in global_sparsifier.masks.counts().values())
    total = sum(t for _, t in global_sparsifier.masks.counts().values())
    assert kept == round(0.2 * total)


# ----------------------------------------------------------------------- trainer callback resume
class Interrupt(Exception):
    pass


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_step_begin(self, trainer: Trainer) -> None:
        if trainer.epoch == self.epochs:
            raise Interrupt


def _trainer_run(
    checkpoint: Path | None, stop_after: int | None = None, resume: bool = False
) -> tuple[nn.Module, dict]:
    splits = split_validation(make_synthetic(num_train=384, num_test=32, image_size=8, num_classes=3, seed=0))
    config = TrainConfig(epochs=4, batch_size=32, lr=0.05, schedule="step", milestones=(3,), channels_last=False)
    model = make_model()
    method = METHODS.get("campfire")
    assert isinstance(method, GradualMethod)
    prune = PruneConfig(
        method="campfire",
        sparsity=2 / 3,
        granularity="window",
        options={"start_epoch": 1, "end_epoch": 3, "every": 3, "fallback": "n:m"},
    )
    callback = method.callback(model, prune, method.parse_options(prune.options))
    extra = [StopAfter(stop_after)] if stop_after is not None else []
    trainer = Trainer(
        model, splits, config, seed=5, masks=callback.masks, callbacks=[callback, *extra], checkpoint_dir=checkpoint
    )
    trainer.fit(resume=resume)
    return model, {name: mask.clone() for name, mask in callback.masks.items()}


def test_trainer_resume_mid_schedule_gives_the_same_masks_and_weights(tmp_path: Path) -> None:
    whole, whole_masks = _trainer_run(tmp_path / "whole")
    with pytest.raises(Interrupt):
        _trainer_run(tmp_path / "cut", stop_after=2)  # checkpoint at epoch 2, inside the pruning window
    resumed, resumed_masks = _trainer_run(tmp_path / "cut", resume=True)
    assert whole_masks.keys() == resumed_masks.keys()
    for name, mask in whole_masks.items():
        assert torch.equal(mask, resumed_masks[name]), name
        assert 1 - mask.double().mean().item() == pytest.approx(6 / 9 if mask.shape[2] == 3 else 0.75)
    for (name, value), (_, other) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(value, other), name


def test_window_granularity_lookup_is_shared() -> None:
    assert granularity("window") is granularity("window")


def test_a_random_scorer_draws_per_run_seed_and_repeats_for_one_seed() -> None:
    def masks(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5))
        sparsifier = sec.gradual(
            model, "gmp", sparsity=0.5, start_step=0, end_step=4, every=2, scorer="random", seed=seed
        )
        for _ in range(4):
            sparsifier.step()
        return {name: mask.clone() for name, mask in sparsifier.masks.items()}

    first, again, other = masks(1), masks(1), masks(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
