"""MobileNetV2 at width 1.0 (Sandler et al. 2018, arXiv 1801.04381).

Stem: 3×3 convolution to 32 channels (stride 2) → BN → ReLU6. Then inverted residual blocks from
the paper's table 2, rows (t, c, n, s) = expansion, output channels, repeats, stride of the first
repeat: (1,16,1,1), (6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1). A block is
``1×1 expand (×t) → BN → ReLU6 → 3×3 depthwise (stride) → BN → ReLU6 → 1×1 project → BN`` (no
expansion convolution when t = 1), with an identity shortcut when stride is 1 and the width is
unchanged. A 1×1 convolution to 1280 channels (BN, ReLU6), global average pooling, dropout 0.2 and
the ``classifier`` Linear(1280, classes) end the network: 3,504,872 parameters for 3×224×224 and
1000 classes. All convolutions are bias-free.

Deliberate deviation for small images (CIFAR adaptation): when ``image_size`` < 64 the stem and the
(6,24,2,2) stage use stride 1, so the total downsampling is 8 rather than 32 and a 28×28 or 32×32
input still ends on a 4×4 map. The layers and the parameter count are the same at every size.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.models.registry import register_model

INVERTED_RESIDUAL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""Rows (expansion t, output channels c, repeats n, first stride s) of table 2 of the paper."""

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
DROPOUT = 0.2
SMALL_IMAGE_BELOW = 64
"""Images smaller than this keep full resolution in the stem and the first 24-channel block."""


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Return ``[Conv2d (bias-free, same padding), BatchNorm2d]`` as a list to splice into a Sequential."""
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise (3×3, stride) → project (1×1), linear bottleneck, optional shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*conv_bn(in_channels, hidden, 1), nn.ReLU6(inplace=False)]
        layers += [*conv_bn(hidden, hidden, 3, stride=stride, groups=hidden), nn.ReLU6(inplace=False)]
        layers += conv_bn(hidden, out_channels, 1)
        self.layers = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``layers(x) + x`` when the shortcut applies, else ``layers(x)``."""
        if self.use_shortcut:
            return self.layers(x) + x
        return self.layers(x)


class MobileNetV2(nn.Module):
    """``features`` → global average pooling → flatten → ``dropout`` → ``classifier``."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        small_image = image_size < SMALL_IMAGE_BELOW
        stem_stride = 1 if small_image else 2
        layers: list[nn.Module] = [
            nn.Sequential(*conv_bn(in_channels, STEM_CHANNELS, 3, stride=stem_stride), nn.ReLU6(inplace=False))
        ]
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
            keep_resolution = small_image and out_channels == 24
            for index in range(repeats):
                stride = first_stride if index == 0 and not keep_resolution else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        layers.append(nn.Sequential(*conv_bn(channels, LAST_CHANNELS, 1), nn.ReLU6(inplace=False)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(LAST_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


@register_model(
    "mobilenetv2",
    kind="conv",
    description="MobileNetV2 width 1.0; stride 1 in the stem and first 24-channel stage below 64 pixels",
)
def mobilenetv2(*, in_channels: int, image_size: int, num_classes: int) -> MobileNetV2:
    """Return MobileNetV2 (3,504,872 parameters for 3×224×224 and 1000 classes)."""
    return MobileNetV2(in_channels, image_size, num_classes)
