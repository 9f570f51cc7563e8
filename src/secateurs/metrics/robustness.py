"""Adversarial robustness: FGSM and PGD (L∞) accuracy, with ε in pixel units.

Models in secateurs see *normalised* inputs ``(x − mean) / std`` of pixels ``x ∈ [0, 1]``. An L∞
budget ε is meant in pixel units (ε = 8/255 means eight grey levels), so the attacks work on the
pixels: a batch is de-normalised, perturbed, clamped to the valid range [0, 1], and re-normalised
before every forward pass. (Attacking the normalised tensor with the same ε would scale the budget
by 1/std — about 2.8× larger on Fashion-MNIST — and would leave the valid pixel range.)

- FGSM (Goodfellow et al. 2015, arXiv 1412.6572): ``x' = clip₀¹(x + ε · sign ∇ₓ L(f(x), y))``.
- PGD (Madry et al. 2018, arXiv 1706.06083): a uniform random start in the ε-ball (seeded), then
  ``steps`` iterations of ``x ← Π(x + α · sign ∇ₓ L)`` where Π projects onto the ε-ball around the
  clean pixels and onto [0, 1]; α = 2.5 ε / steps by default (Madry et al.'s choice).

L is the mean cross-entropy; the model is evaluated in eval mode (BatchNorm uses its running
statistics) and its parameters receive no gradient. Accuracy is the fraction of examples whose
adversarial version is still classified correctly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError


@dataclass(frozen=True)
class PixelSpace:
    """Per-channel normalisation: ``normalised = (pixels − mean) / std``, pixels in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean)) + (1,) * (like.dim() - 2)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def to_pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(normalised)
        return normalised * std + mean

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(pixels)
        return (pixels - mean) / std


def _input_gradient(model: nn.Module, space: PixelSpace, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∇ of the mean cross-entropy with respect to ``pixels`` (the model's parameters get no gradient)."""
    pixels = pixels.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(space.normalise(pixels)), labels)
        (gradient,) = torch.autograd.grad(loss, pixels)
    return gradient


def fgsm(
    model: nn.Module, space: PixelSpace, pixels: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """FGSM adversarial pixels: ``clip₀¹(x + ε · sign ∇ₓ L)``. Returns a new tensor."""
    if epsilon == 0:
        return pixels.clone()
    gradient = _input_gradient(model, space, pixels, labels)
    return (pixels + epsilon * gradient.sign()).clamp_(0.0, 1.0).detach()


def pgd(
    model: nn.Module,
    space: PixelSpace,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    *,
    steps: int,
    generator: torch.Generator,
    step_size: float | None = None,
) -> torch.Tensor:
    """PGD-L∞ adversarial pixels from a seeded uniform random start; see the module docstring."""
    if epsilon == 0:
        return pixels.clone()
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    noise = torch.rand(pixels.shape, generator=generator, dtype=pixels.dtype).to(pixels.device)
    adversarial = (pixels + (2 * noise - 1) * epsilon).clamp_(0.0, 1.0)
    for _ in range(steps):
        gradient = _input_gradient(model, space, adversarial, labels)
        adversarial = adversarial + alpha * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, pixels - epsilon), pixels + epsilon).clamp_(0.0, 1.0).detach()
    return adversarial


@dataclass(frozen=True)
class AttackConfig:
    """What `robust_accuracy` runs: attacks, ε grid (pixel units), PGD steps and seed."""

    epsilons: tuple[float, ...] = (0.01, 0.03, 0.05, 0.1)
    attacks: tuple[str, ...] = ("fgsm", "pgd")
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise UsageError(f"unknown attack {unknown[0]!r}; accepted: {', '.join(ATTACKS)}")
        if any(not 0.0 <= e <= 1.0 for e in self.epsilons):
            raise UsageError(f"ε must be in [0, 1] (pixel units), got {list(self.epsilons)}")
        if self.pgd_steps < 1:
            raise UsageError(f"PGD needs at least 1 step, got {self.pgd_steps}")


ATTACKS = ("fgsm", "pgd")


def robust_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    space: PixelSpace,
    config: AttackConfig,
) -> dict[str, Any]:
    """Accuracy under every attack and ε: ``{"fgsm": {"0.03": acc, …}, "pgd": {…}, "clean": acc}``.

    ``clean`` is the accuracy on the same examples without attack (the reference for the others).

    ``batches`` are *normalised* inputs (as the loaders produce) with labels. The model is put in
    eval mode and restored afterwards; it is not modified. PGD's random starts come from one
    generator seeded with ``config.seed``, consumed batch by batch in a fixed order.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(config.seed)
    correct: dict[str, dict[float, int]] = {attack: dict.fromkeys(config.epsilons, 0) for attack in config.attacks}
    clean = 0
    total = 0
    try:
        for inputs, labels in batches:
            pixels = space.to_pixels(inputs.float()).contiguous()
            total += int(labels.numel())
            with torch.no_grad():
                clean += int((model(space.normalise(pixels)).argmax(dim=1) == labels).sum())
            for epsilon in config.epsilons:
                for attack in config.attacks:
                    if attack == "fgsm":
                        adversarial = fgsm(model, space, pixels, labels, epsilon)
                    else:
                        adversarial = pgd(
                            model,
                            space,
                            pixels,
                            labels,
                            epsilon,
                            steps=config.pgd_steps,
                            generator=generator,
                            step_size=config.pgd_step_size,
                        )
                    with torch.no_grad():
                        predictions = model(space.normalise(adversarial)).argmax(dim=1)
                    correct[attack][epsilon] += int((predictions == labels).sum())
    finally:
        model.train(was_training)
    if total == 0:
        raise UsageError("robustness needs at least one example")
    result: dict[str, Any] = {
        attack: {f"{e:g}": counts[e] / total for e in config.epsilons} for attack, counts in correct.items()
    }
    result["clean"] = clean / total
    return result


def epsilon_keys(epsilons: Sequence[float]) -> list[str]:
    """The keys `robust_accuracy` uses for ``epsilons`` (``f"{ε:g}"``)."""
    return [f"{e:g}" for e in epsilons]
