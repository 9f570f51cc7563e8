"""ImageNet-style residual networks: ResNet-18 and ResNet-50 (He et al. 2016, arXiv 1512.03385).

Stem: 7×7 convolution (64 filters, stride 2) → BN → ReLU → 3×3 max pooling (stride 2, padding 1).
Four stages of widths 64/128/256/512 with strides 1/2/2/2, of [2, 2, 2, 2] basic blocks (ResNet-18)
or [3, 4, 6, 3] bottleneck blocks with expansion 4 (ResNet-50). The bottleneck is "v1.5": its stride
sits on the 3×3 convolution rather than on the first 1×1. When a block changes the shape, its
shortcut is a 1×1 convolution (with the block's stride) followed by BN; otherwise it is the identity.
Global average pooling and a ``classifier`` Linear end the network. Convolutions are bias-free.

With 224×224 inputs and 1000 classes ResNet-18 has 11,689,512 parameters and ResNet-50 25,557,032,
the counts of the reference implementations. Small inputs work too: 28×28 reaches 1×1 in the last
stage. The residual blocks here are shared with the CIFAR ResNets in `resnet_cifar.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.models.registry import register_model


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Return the identity when the shape is unchanged, else a 1×1 convolution (``stride``) and BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BN; ReLU after the first and after the residual sum."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = projection_shortcut(in_channels, width, stride)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(residual(x) + shortcut(x))``; the input is not modified."""
        residual = self.relu1(self.bn1(self.conv1(x)))
        residual = self.bn2(self.conv2(residual))
        return self.relu2(residual + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 (reduce) → 3×3 (stride) → 1×1 (expand ×4), each with BN; ReLU after the sum."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.relu3 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(residual(x) + shortcut(x))``; the input is not modified."""
        residual = self.relu1(self.bn1(self.conv1(x)))
        residual = self.relu2(self.bn2(self.conv2(residual)))
        residual = self.bn3(self.conv3(residual))
        return self.relu3(residual + self.shortcut(x))


ResidualBlock = type[BasicBlock] | type[Bottleneck]


def residual_stage(block: ResidualBlock, in_channels: int, width: int, depth: int, stride: int) -> nn.Sequential:
    """Return ``depth`` blocks of ``width``; only the first one has ``stride`` (and may project)."""
    blocks: list[nn.Module] = []
    channels = in_channels
    for index in range(depth):
        blocks.append(block(channels, width, stride if index == 0 else 1))
        channels = width * block.expansion
    return nn.Sequential(*blocks)


class ImageNetResNet(nn.Module):
    """``stem`` → ``stages`` → global average pooling → flatten → ``classifier``."""

    def __init__(self, block: ResidualBlock, stage_depths: Sequence[int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        channels = 64
        for stage_index, (width, depth) in enumerate(zip((64, 128, 256, 512), stage_depths)):
            stride = 1 if stage_index == 0 else 2
            stages.append(residual_stage(block, channels, width, depth, stride))
            channels = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = self.stages(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model(
    "resnet18",
    kind="conv",
    description="ImageNet ResNet-18: 7×7 stem + max pool, basic blocks [2, 2, 2, 2], widths 64-512",
)
def resnet18(*, in_channels: int, image_size: int, num_classes: int) -> ImageNetResNet:
    """Return ResNet-18 (11,689,512 parameters for 3×224×224 and 1000 classes)."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes)


@register_model(
    "resnet50",
    kind="conv",
    description="ImageNet ResNet-50 (v1.5): 7×7 stem + max pool, bottleneck blocks [3, 4, 6, 3], widths 256-2048",
)
def resnet50(*, in_channels: int, image_size: int, num_classes: int) -> ImageNetResNet:
    """Return ResNet-50 v1.5 (25,557,032 parameters for 3×224×224 and 1000 classes)."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes)
