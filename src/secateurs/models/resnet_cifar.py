"""CIFAR residual networks ResNet-8/20/32/56 (He et al. 2016, arXiv 1512.03385, section 4.2).

Depth 6n + 2: a 3×3 stem convolution (16 filters) with BN and ReLU, three stages of n basic blocks
with widths 16/32/64 and strides 1/2/2, global average pooling and a ``classifier`` Linear(64, classes).
n = 1, 3, 5, 9 for ResNet-8, -20, -32, -56. Convolutions are bias-free (each is followed by BN).

Deliberate deviation from the paper: the paper's CIFAR networks use the parameter-free "option A"
shortcut (stride-2 subsampling and zero-padding of the new channels) where a stage changes the shape;
that gives ResNet-20 269,434 parameters on 1×28×28 inputs with 10 classes (269,722 on 3×32×32).
Here those two shortcuts are "option B", a 1×1 convolution with the stage's stride followed by BN,
because a zero-padded shortcut fixes which channels are zero and cannot be channel-pruned by a
dependency graph. Option B adds 16·32 + 2·32 + 32·64 + 2·64 = 2,752 parameters: ResNet-20 has
272,186 on 1×28×28 (272,474 on 3×32×32).
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.models.registry import register_model
from secateurs.models.resnet import BasicBlock, residual_stage

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class CifarResNet(nn.Module):
    """``stem`` → three ``stages`` of basic blocks → global average pooling → ``classifier``."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STAGE_WIDTHS[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(STAGE_WIDTHS[0]),
            nn.ReLU(inplace=False),
        )
        stages: list[nn.Module] = []
        channels = STAGE_WIDTHS[0]
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            stages.append(residual_stage(BasicBlock, channels, width, blocks_per_stage, stride))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = self.stages(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model(
    "resnet8",
    kind="conv",
    description="CIFAR ResNet-8: 1 basic block per stage, widths 16/32/64, 1×1-conv shortcuts (option B)",
)
def resnet8(*, in_channels: int, image_size: int, num_classes: int) -> CifarResNet:
    """Return CIFAR ResNet-8 (``image_size`` does not change the layers)."""
    return CifarResNet(8, in_channels, num_classes)


@register_model(
    "resnet20",
    kind="conv",
    description="CIFAR ResNet-20: 3 basic blocks per stage, widths 16/32/64, 1×1-conv shortcuts (option B)",
)
def resnet20(*, in_channels: int, image_size: int, num_classes: int) -> CifarResNet:
    """Return CIFAR ResNet-20 (272,186 parameters for 1×28×28 and 10 classes)."""
    return CifarResNet(20, in_channels, num_classes)


@register_model(
    "resnet32",
    kind="conv",
    description="CIFAR ResNet-32: 5 basic blocks per stage, widths 16/32/64, 1×1-conv shortcuts (option B)",
)
def resnet32(*, in_channels: int, image_size: int, num_classes: int) -> CifarResNet:
    """Return CIFAR ResNet-32 (``image_size`` does not change the layers)."""
    return CifarResNet(32, in_channels, num_classes)


@register_model(
    "resnet56",
    kind="conv",
    description="CIFAR ResNet-56: 9 basic blocks per stage, widths 16/32/64, 1×1-conv shortcuts (option B)",
)
def resnet56(*, in_channels: int, image_size: int, num_classes: int) -> CifarResNet:
    """Return CIFAR ResNet-56 (``image_size`` does not change the layers)."""
    return CifarResNet(56, in_channels, num_classes)
