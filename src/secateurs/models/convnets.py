"""Small plain convolutional networks: the lottery-ticket Conv-2/4/6 and two small BN CNNs.

`conv2`, `conv4`, `conv6` are the networks of Frankle & Carbin (2019, "The Lottery Ticket
Hypothesis", arXiv 1803.03635, figure 2): pairs of 3×3 convolutions (padding 1, ReLU, biases, no
normalisation) separated by 2×2 max pooling, then fully connected 256 → 256 → classes.

`cnn-bn4` (32-32-M-64-64-M, every convolution followed by BN and ReLU, then flatten → classifier)
is the "flatten → linear after conv + BN" case that LAP-BN must handle. `cnn-bn5` (32-32-M-64-64-M-128
with BN and ReLU, global average pooling, classifier) is the small CNN of the Campfire and HAP
small-scale experiments. Convolutions followed by BN have no bias.

`conv_stack` (a VGG-style layer list → ``nn.Sequential``) and `ConvNet` are shared with `vgg.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.models.registry import register_model

POOL = "M"
"""In a stack configuration, ``"M"`` is a 2×2 max pooling; an integer is a 3×3 convolution's width."""

StackConfig = Sequence[int | str]


def conv_stack(config: StackConfig, in_channels: int, *, batch_norm: bool, ceil_mode: bool = False) -> nn.Sequential:
    """Return the layers described by ``config``: 3×3 convolutions (padding 1) and 2×2 max pooling.

    With ``batch_norm`` each convolution is bias-free and followed by BatchNorm; otherwise it has a
    bias. Every convolution ends with its own ReLU module (never shared, never in place).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in config:
        if spec == POOL:
            layers.append(nn.MaxPool2d(2, ceil_mode=ceil_mode))
            continue
        if not isinstance(spec, int):
            raise ValueError(f"stack configuration entries are widths or {POOL!r}, got {spec!r}")
        layers.append(nn.Conv2d(channels, spec, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(spec))
        layers.append(nn.ReLU(inplace=False))
        channels = spec
    return nn.Sequential(*layers)


def stack_output_channels(config: StackConfig, in_channels: int) -> int:
    """Return the number of channels that the stack described by ``config`` outputs."""
    widths = [spec for spec in config if isinstance(spec, int)]
    return widths[-1] if widths else in_channels


def stack_output_size(config: StackConfig, image_size: int, *, ceil_mode: bool = False) -> int:
    """Return the side length of the stack's output for square inputs of ``image_size``."""
    size = image_size
    for spec in config:
        if spec == POOL:
            size = (size + 1) // 2 if ceil_mode else size // 2
    return size


class ConvNet(nn.Module):
    """``features`` → ``pool`` → flatten → ``hidden`` → ``classifier``.

    ``pool`` is ``nn.Identity`` (flatten the whole map) or global average pooling; ``hidden`` is a
    possibly empty stack of ``Linear → ReLU`` layers.
    """

    def __init__(
        self,
        features: nn.Sequential,
        flattened_features: int,
        hidden_widths: Sequence[int],
        num_classes: int,
        *,
        global_pool: bool,
    ) -> None:
        super().__init__()
        self.features = features
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        layers: list[nn.Module] = []
        width_in = flattened_features
        for width in hidden_widths:
            layers.append(nn.Linear(width_in, width))
            layers.append(nn.ReLU(inplace=False))
            width_in = width
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(width_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.hidden(x))


LOTTERY_TICKET_CONFIGS: dict[str, StackConfig] = {
    "conv2": (64, 64, POOL),
    "conv4": (64, 64, POOL, 128, 128, POOL),
    "conv6": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL),
}
LOTTERY_TICKET_HIDDEN = (256, 256)


def lottery_ticket_convnet(config: StackConfig, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return a Conv-k network of Frankle & Carbin: ``config`` without BN, then 256-256-classes."""
    side = stack_output_size(config, image_size)
    flattened = stack_output_channels(config, in_channels) * side * side
    features = conv_stack(config, in_channels, batch_norm=False)
    return ConvNet(features, flattened, LOTTERY_TICKET_HIDDEN, num_classes, global_pool=False)


@register_model(
    "conv2",
    kind="conv",
    description="Lottery-ticket Conv-2: 3×3 conv 64-64-M, then 256-256-classes (Frankle & Carbin 2019)",
    min_image_size=2,
)
def conv2(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return Conv-2 (no BN, biases, ReLU)."""
    return lottery_ticket_convnet(LOTTERY_TICKET_CONFIGS["conv2"], in_channels, image_size, num_classes)


@register_model(
    "conv4",
    kind="conv",
    description="Lottery-ticket Conv-4: 3×3 conv 64-64-M-128-128-M, then 256-256-classes (Frankle & Carbin 2019)",
    min_image_size=4,
)
def conv4(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return Conv-4 (1,933,258 parameters for 1×28×28 and 10 classes)."""
    return lottery_ticket_convnet(LOTTERY_TICKET_CONFIGS["conv4"], in_channels, image_size, num_classes)


@register_model(
    "conv6",
    kind="conv",
    description="Lottery-ticket Conv-6: 3×3 conv 64-64-M-128-128-M-256-256-M, then 256-256-classes",
    min_image_size=8,
)
def conv6(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return Conv-6 (no BN, biases, ReLU)."""
    return lottery_ticket_convnet(LOTTERY_TICKET_CONFIGS["conv6"], in_channels, image_size, num_classes)


CNN_BN4_CONFIG: StackConfig = (32, 32, POOL, 64, 64, POOL)
CNN_BN5_CONFIG: StackConfig = (32, 32, POOL, 64, 64, POOL, 128)


@register_model(
    "cnn-bn4",
    kind="conv",
    description="Small BN CNN: 3×3 conv 32-32-M-64-64-M with BN+ReLU, flatten → classifier (LAP-BN)",
    min_image_size=4,
)
def cnn_bn4(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return the 4-convolution BN CNN whose classifier reads the flattened 64×(H/4)×(W/4) map."""
    side = stack_output_size(CNN_BN4_CONFIG, image_size)
    features = conv_stack(CNN_BN4_CONFIG, in_channels, batch_norm=True)
    return ConvNet(features, 64 * side * side, (), num_classes, global_pool=False)


@register_model(
    "cnn-bn5",
    kind="conv",
    description="Small BN CNN: 3×3 conv 32-32-M-64-64-M-128 with BN+ReLU, global average pool, classifier",
    min_image_size=4,
)
def cnn_bn5(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return the 5-convolution BN CNN with global average pooling before the classifier."""
    features = conv_stack(CNN_BN5_CONFIG, in_channels, batch_norm=True)
    return ConvNet(features, 128, (), num_classes, global_pool=True)
