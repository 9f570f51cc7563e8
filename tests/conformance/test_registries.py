"""Invariants every registered scorer, unstructured method and granularity must satisfy.

Parametrized over the registries, so a scorer, method or granularity added later (one new file) is
tested here automatically. Data-driven entries get calibration batches from the synthetic dataset;
methods that train get the synthetic splits and a tiny training budget.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Splits, split_validation
from secateurs.methods import METHODS, PruneContext
from secateurs.models import build_model
from secateurs.scoring import SCORERS, ScoreContext
from secateurs.sparsity.granularity import GRANULARITIES
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names

pytestmark = pytest.mark.usefixtures("one_thread")

SCORER_NAMES = SCORERS.names()
UNSTRUCTURED = [name for name, method in METHODS.items() if method.kind == "unstructured"]
GRANULARITY_NAMES = GRANULARITIES.names()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_validation(make_synthetic(num_train=720, num_test=60, seed=0))


def calibration(splits: Splits, count: int = 2, batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    normalization = Normalization(splits.dataset.mean, splits.dataset.std)
    loader = BatchLoader(splits.train, batch_size, normalization)
    return [batch for _, batch in zip(range(count), loader, strict=False)]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_registries_hold_the_built_ins() -> None:
    assert {"magnitude", "random"} <= set(SCORER_NAMES)
    assert {"magnitude", "magnitude-global", "random"} <= set(UNSTRUCTURED)
    assert {"element", "filter"} <= set(GRANULARITY_NAMES)


# --------------------------------------------------------------------------------------------- scorers
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("name", SCORER_NAMES)
def test_scorer_leaves_the_model_unchanged_and_scores_every_weight(name: str, masked: bool, splits: Splits) -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 28, 28), 10)  # conv, BN (buffers), residuals, linear classifier
    model.eval()
    names = prunable_names(model)
    if masked:
        generator = torch.Generator().manual_seed(1)
        store = MaskStore(model)
        store.update_({n: torch.rand(model.get_parameter(n).shape, generator=generator) < 0.7 for n in names[::2]})
    before = snapshot(model)
    batches = calibration(splits)
    context = ScoreContext(
        generator=torch.Generator().manual_seed(0), example_inputs=batches[0][0][:4], batches=batches
    )
    scores = SCORERS.get(name).score(model, names, context)
    assert list(scores) == names
    for weight_name in names:
        score = scores[weight_name]
        weight = model.get_submodule(weight_name.rsplit(".", 1)[0]).weight
        assert isinstance(score, torch.Tensor) and score.shape == weight.shape, weight_name
        assert score.is_floating_point() and bool(torch.isfinite(score).all()), weight_name
    after = snapshot(model)
    assert list(after) == list(before)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert not model.training
    assert all(parameter.grad is None for parameter in model.parameters())


# --------------------------------------------------------------------------------- unstructured methods
def method_context(method_name: str, splits: Splits, seed: int = 0) -> PruneContext:
    method = METHODS.get(method_name)
    batches = calibration(splits)
    train_config = TrainConfig(epochs=0.2, batch_size=64, train_subset=320, eval_subset=60, lr=0.01)
    return PruneContext(
        example_inputs=batches[0][0][:4],
        generator=torch.Generator().manual_seed(seed),
        batches=batches,
        splits=splits if method.trains else None,
        train_config=train_config if method.trains else None,
        seed=seed,
    )


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_unstructured_method_realises_the_sparsity_and_masks_stay_zero(
    name: str, sparsity: float, splits: Splits
) -> None:
    method = METHODS.get(name)
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 28, 28), 10)
    config = PruneConfig(method=name, sparsity=sparsity)
    options = method.parse_options({})
    outcome = method.apply(model, config, options, method_context(name, splits))
    assert outcome.masks is not None
    targets = prunable_names(outcome.model, exclude=config.exclude)
    total = sum(_effective(outcome.model, n).numel() for n in targets)
    assert total == 266_200
    counts = outcome.masks.counts()
    kept = sum(counts[n][0] if n in counts else _effective(outcome.model, n).numel() for n in targets)
    assert abs(kept - round((1 - sparsity) * total)) <= 1, (kept, total)
    assert sum(int((_effective(outcome.model, n) != 0).sum()) for n in targets) <= kept

    # hard masks: 5 SGD steps with momentum and weight decay leave masked weights and momentum at zero
    masks = outcome.masks
    optimizer = torch.optim.SGD(outcome.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    masks.bind_optimizer(optimizer)
    outcome.model.train()
    for x, y in calibration(splits, count=5):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(outcome.model(x), y).backward()
        optimizer.step()
    for weight_name, mask in masks.items():
        original = masks.original(weight_name)
        assert int((original[~mask] != 0).sum()) == 0, weight_name
        assert int((optimizer.state[original]["momentum_buffer"][~mask] != 0).sum()) == 0, weight_name
        assert int((_effective(outcome.model, weight_name) != 0).sum()) <= int(mask.sum())


def _effective(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, tensor_name = name.rpartition(".")
    value = getattr(model.get_submodule(module_name), tensor_name)
    assert isinstance(value, torch.Tensor)
    return value


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_unstructured_method_is_deterministic_for_a_seed(name: str, splits: Splits) -> None:
    method = METHODS.get(name)

    def masks() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("lenet300", (1, 28, 28), 10)
        config = PruneConfig(method=name, sparsity=0.7)
        outcome = method.apply(model, config, method.parse_options({}), method_context(name, splits, seed=4))
        assert outcome.masks is not None
        return outcome.masks.state_dict()

    first, second = masks(), masks()
    assert list(first) == list(second)
    assert all(torch.equal(first[key], second[key]) for key in first)


# ---------------------------------------------------------------------------------------- granularities
@pytest.mark.parametrize("name", GRANULARITY_NAMES)
def test_granularity_select_on_a_conv_weight(name: str) -> None:
    grain = GRANULARITIES.get(name)
    shape = torch.Size((16, 8, 3, 3))
    grain.check("conv.weight", shape)
    scores = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sparsity in (0.0, 0.5, 0.75):  # 0.75: within every granularity's range (n:m keeps 1 of 4)
        mask = grain.select(scores, sparsity)
        assert mask.dtype == torch.bool and mask.shape == shape
        assert 0 < int(mask.sum()) <= shape.numel()
    dense = grain.select(scores, 0.0, min_keep=0)
    sparse = grain.select(scores, 0.75, min_keep=0)
    assert not bool((sparse & ~dense).any())  # nested as the sparsity grows
    # removed entries stay removed: score -inf on half the filters' entries
    dead = scores.clone()
    dead[::2] = float("-inf")
    mask = grain.select(dead, 0.0, min_keep=0)
    assert not bool(mask[::2].any())
