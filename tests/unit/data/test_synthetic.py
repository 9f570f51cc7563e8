"""The synthetic dataset: deterministic, balanced, and learnable by a linear model."""

from __future__ import annotations

import pytest
import torch

from secateurs.data.synthetic import make_synthetic
from secateurs.errors import UsageError


def test_same_seed_gives_equal_tensors_and_another_seed_differs() -> None:
    first, second, other = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.train.y, second.train.y)
    assert torch.equal(first.test.x, second.test.x) and torch.equal(first.test.y, second.test.y)
    assert first.mean == second.mean and first.std == second.std
    assert not torch.equal(first.train.x, other.train.x)


def test_global_rng_is_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_synthetic()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 7)])
def test_shapes_dtypes_and_statistics(channels: int, size: int, classes: int) -> None:
    dataset = make_synthetic(num_train=300, num_test=70, num_classes=classes, image_size=size, channels=channels)
    assert dataset.name == "synthetic" and dataset.num_classes == classes and dataset.augment == "none"
    assert dataset.train.x.shape == (300, channels, size, size) and dataset.test.x.shape == (70, channels, size, size)
    assert dataset.train.x.dtype == torch.uint8 and dataset.train.y.dtype == torch.int64
    assert int(dataset.train.y.min()) == 0 and int(dataset.train.y.max()) == classes - 1
    scaled = dataset.train.x.double() / 255
    assert dataset.mean == pytest.approx(tuple(scaled.mean(dim=(0, 2, 3)).tolist()), abs=1e-9)
    assert dataset.std == pytest.approx(tuple(scaled.std(dim=(0, 2, 3), unbiased=False).tolist()), abs=1e-9)


def test_classes_are_balanced_within_twenty_percent() -> None:
    dataset = make_synthetic()
    for split, count in ((dataset.train, 1200), (dataset.test, 400)):
        counts = torch.bincount(split.y, minlength=10)
        assert int(counts.sum()) == count
        assert int(counts.min()) >= 0.8 * count / 10 and int(counts.max()) <= 1.2 * count / 10


def _logistic_regression_accuracy(seed: int) -> tuple[float, float, float]:
    """Train softmax regression on normalised pixels with 100 full-batch gradient-descent steps
    (lr 0.1, from zero weights); return (accuracy after one step, final train, final test)."""
    dataset = make_synthetic(seed=seed)
    mean, std = dataset.mean[0], dataset.std[0]

    def features(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - mean) / std).flatten(1)

    train_x, test_x = features(dataset.train.x), features(dataset.test.x)
    weight = torch.zeros(train_x.shape[1], 10, requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(((x @ weight + bias).argmax(1) == y).float().mean())

    after_one_step = 0.0
    for step in range(100):
        loss = torch.nn.functional.cross_entropy(train_x @ weight + bias, dataset.train.y)
        weight_grad, bias_grad = torch.autograd.grad(loss, [weight, bias])
        with torch.no_grad():
            weight -= 0.1 * weight_grad
            bias -= 0.1 * bias_grad
        if step == 0:
            after_one_step = accuracy(train_x, dataset.train.y)
    return after_one_step, accuracy(train_x, dataset.train.y), accuracy(test_x, dataset.test.y)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_regression_learns_it(seed: int) -> None:
    after_one_step, train_accuracy, test_accuracy = _logistic_regression_accuracy(seed)
    assert after_one_step > 0.5  # the class signal is strong: one step already beats chance (10 %) by far
    assert train_accuracy > 0.9
    assert test_accuracy > 0.9  # it generalises: the classes are real, not memorised noise


def test_an_untrained_classifier_is_at_chance() -> None:
    dataset = make_synthetic()
    constant_guess = float((dataset.test.y == 0).float().mean())
    assert constant_guess == pytest.approx(0.1, abs=0.02)


def test_labels_are_not_predictable_from_position() -> None:
    labels = make_synthetic().train.y
    assert not torch.equal(labels, torch.arange(1200) % 10)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_train": 0}, {"num_test": 0}, {"num_classes": 1}, {"image_size": 3}, {"channels": 0}],
)
def test_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError, match="synthetic: "):
        make_synthetic(**kwargs)
