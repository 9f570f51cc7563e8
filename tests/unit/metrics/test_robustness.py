"""FGSM and PGD in pixel space: closed form on a linear model, ε = 0, PGD ≤ FGSM, projection, seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.synthetic import make_synthetic
from secateurs.errors import UsageError
from secateurs.metrics.accuracy import evaluate
from secateurs.metrics.robustness import AttackConfig, PixelSpace, fgsm, pgd, robust_accuracy

SPACE = PixelSpace(mean=(0.3,), std=(0.5,))


def linear_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def pixel_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(32, 1, 4, 4, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def test_fgsm_on_a_linear_model_equals_the_closed_form() -> None:
    model = linear_model()
    pixels, labels = pixel_batch()
    linear = model[1]
    assert isinstance(linear, nn.Linear)
    epsilon = 0.1
    with torch.no_grad():
        logits = linear(((pixels - 0.3) / 0.5).flatten(1))
        # ∂L/∂x = (1/N) Wᵀ (softmax − onehot) / σ: its sign is the sign of Wᵀ (p − y).
        residual = logits.softmax(dim=1) - nn.functional.one_hot(labels, 3).float()
        direction = (residual @ linear.weight).sign().reshape(pixels.shape)
        expected = (pixels + epsilon * direction).clamp(0.0, 1.0)
    adversarial = fgsm(model, SPACE, pixels, labels, epsilon)
    assert torch.equal(adversarial, expected)
    with torch.no_grad():
        expected_accuracy = (linear(((expected - 0.3) / 0.5).flatten(1)).argmax(1) == labels).float().mean().item()
    normalised = (pixels - 0.3) / 0.5
    result = robust_accuracy(model, [(normalised, labels)], SPACE, AttackConfig(epsilons=(epsilon,), attacks=("fgsm",)))
    assert result["fgsm"]["0.1"] == pytest.approx(expected_accuracy, abs=1e-12)


def test_fgsm_moves_every_pixel_by_epsilon_unless_clamped() -> None:
    model = linear_model()
    pixels, labels = pixel_batch()
    adversarial = fgsm(model, SPACE, pixels, labels, 0.05)
    change = (adversarial - pixels).abs()
    inside = (pixels > 0.05) & (pixels < 0.95)
    assert torch.allclose(change[inside], torch.full_like(change[inside], 0.05), atol=1e-6)
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_epsilon_zero_gives_the_clean_accuracy() -> None:
    model = linear_model(3)
    pixels, labels = pixel_batch(4)
    normalised = (pixels - 0.3) / 0.5
    result = robust_accuracy(model, [(normalised, labels)], SPACE, AttackConfig(epsilons=(0.0,)))
    clean = evaluate(model, [(normalised, labels)]).accuracy
    assert result["fgsm"]["0"] == result["pgd"]["0"] == result["clean"] == clean


def test_pgd_stays_in_the_epsilon_ball_and_the_pixel_range_and_is_seeded() -> None:
    model = linear_model()
    pixels, labels = pixel_batch()
    first = pgd(model, SPACE, pixels, labels, 0.07, steps=4, generator=torch.Generator().manual_seed(9))
    again = pgd(model, SPACE, pixels, labels, 0.07, steps=4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first, again)
    assert (first - pixels).abs().max() <= 0.07 + 1e-6
    assert first.min() >= 0 and first.max() <= 1


def trained_mlp() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]], PixelSpace]:
    dataset = make_synthetic(num_train=600, num_test=200, num_classes=4, image_size=8, seed=2)
    normalization = Normalization(dataset.mean, dataset.std)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        loader = BatchLoader(dataset.train, 50, normalization, shuffle=True, seed=0)
        loader.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    test = list(BatchLoader(dataset.test, 100, normalization))
    return model, test, PixelSpace(dataset.mean, dataset.std)


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model() -> None:
    model, test, space = trained_mlp()
    config = AttackConfig(epsilons=(0.02, 0.05, 0.1), pgd_steps=10, seed=1)
    result = robust_accuracy(model, test, space, config)
    assert result["clean"] > 0.75
    for epsilon in ("0.02", "0.05", "0.1"):
        assert result["pgd"][epsilon] <= result["fgsm"][epsilon] <= result["clean"]
    assert result["pgd"]["0.1"] < result["clean"]  # the attack does something
    before = [p.clone() for p in model.parameters()]
    robust_accuracy(model, test, space, config)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bad_attack_settings_name_what_is_accepted() -> None:
    with pytest.raises(UsageError, match="accepted: fgsm, pgd"):
        AttackConfig(attacks=("cw",))
    with pytest.raises(UsageError, match=r"in \[0, 1\]"):
        AttackConfig(epsilons=(8.0,))
    with pytest.raises(UsageError, match="at least 1 step"):
        AttackConfig(pgd_steps=0)
