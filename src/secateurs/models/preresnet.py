"""PreResNet-29, the pre-activation bottleneck network of HAP (Yu et al. 2021, arXiv 2101.08940).

Pre-activation residual blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks",
arXiv 1603.05027) with a bottleneck of expansion 1:
``BN → ReLU → conv1×1(in→w) → BN → ReLU → conv3×3(w→w, stride) → BN → ReLU → conv1×1(w→w)``, added
to a shortcut that is the identity, or a bias-free 1×1 convolution with the block's stride applied to
the block's raw input when the shape changes. A 3×3 stem convolution makes 64 channels; three stages
of 3 blocks have widths 64/128/256 and strides 1/2/2; the last stage is followed by BN → ReLU,
global average pooling and the ``classifier`` Linear(256, classes).

Depth: 3 stages × 3 blocks × 3 convolutions + stem + classifier = 29 weight layers (the shortcut
projections are not counted, as usual).
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.models.registry import register_model

STAGE_WIDTHS = (64, 128, 256)
STAGE_STRIDES = (1, 2, 2)
BLOCKS_PER_STAGE = 3


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck with expansion 1 (every convolution preceded by BN and ReLU)."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=False)
        self.conv3 = nn.Conv2d(width, width, kernel_size=1, bias=False)
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and in_channels == width
            else nn.Conv2d(in_channels, width, kernel_size=1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``residual(x) + shortcut(x)`` (no activation after the sum)."""
        residual = self.conv1(self.relu1(self.bn1(x)))
        residual = self.conv2(self.relu2(self.bn2(residual)))
        residual = self.conv3(self.relu3(self.bn3(residual)))
        return residual + self.shortcut(x)


class PreResNet(nn.Module):
    """``stem`` → ``stages`` → ``final_bn`` → ReLU → global average pooling → ``classifier``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, STAGE_WIDTHS[0], kernel_size=3, padding=1, bias=False)
        stages: list[nn.Module] = []
        channels = STAGE_WIDTHS[0]
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            blocks = [
                PreActBottleneck(channels if index == 0 else width, width, stride if index == 0 else 1)
                for index in range(BLOCKS_PER_STAGE)
            ]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels)
        self.final_relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = self.final_relu(self.final_bn(self.stages(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model(
    "preresnet29",
    kind="conv",
    description="PreResNet-29 of HAP: pre-activation bottlenecks (expansion 1), 3×3 blocks, widths 64/128/256",
)
def preresnet29(*, in_channels: int, image_size: int, num_classes: int) -> PreResNet:
    """Return PreResNet-29 (``image_size`` does not change the layers)."""
    return PreResNet(in_channels, num_classes)
