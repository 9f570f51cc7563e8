"""Per-channel pixel statistics from 256-bin histograms (exact, no float copy of the images)."""

from __future__ import annotations

import torch


def channel_histograms(images: torch.Tensor) -> torch.Tensor:
    """Per-channel counts of each pixel value of uint8 N×C×H×W (or C×H×W) ``images``: int64 C×256."""
    planes = images if images.dim() == 3 else images.transpose(0, 1)
    return torch.stack([torch.bincount(plane.reshape(-1), minlength=256) for plane in planes])


def mean_std_from_histograms(counts: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and (population) std of pixel values scaled to [0, 1], from C×256 counts.

    A constant (or empty) channel gets std 1.0 so that normalising by it never divides by zero.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for channel in counts.to(torch.float64):
        total = channel.sum()
        if total == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        mean = float((channel * values).sum() / total)
        variance = float((channel * values.square()).sum() / total) - mean**2
        std = max(variance, 0.0) ** 0.5
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def pixel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the per-channel mean and (population) std of uint8 N×C×H×W ``images`` scaled to [0, 1].

    Exact, via a 256-bin histogram per channel. A constant channel gets std 1.0.
    """
    return mean_std_from_histograms(channel_histograms(images))
