"""VGG with batch normalisation, CIFAR style (Simonyan & Zisserman 2015, arXiv 1409.1556).

The convolutional part is the standard configuration A (VGG-11), D (VGG-16) or E (VGG-19): 3×3
convolutions with padding 1, each bias-free and followed by BN and ReLU, and five 2×2 max poolings.
Adaptations for small images, as in the CIFAR VGGs used by pruning papers (e.g. Liu et al. 2017,
"Network Slimming"): the three 4096-wide fully connected layers are replaced by global average pooling
and a single ``classifier`` Linear(512, classes), and pooling uses ``ceil_mode=True`` so that 28×28
inputs (28 → 14 → 7 → 4 → 2 → 1) work as well as 32×32.
"""

from __future__ import annotations

from secateurs.models.convnets import POOL, ConvNet, StackConfig, conv_stack
from secateurs.models.registry import register_model

VGG_CONFIGS: dict[str, StackConfig] = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    "vgg19": (
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL,
    ),
}  # fmt: skip


def vgg(config: StackConfig, in_channels: int, num_classes: int) -> ConvNet:
    """Return a BN VGG with the convolutional ``config``, global average pooling and Linear(512, classes)."""
    features = conv_stack(config, in_channels, batch_norm=True, ceil_mode=True)
    return ConvNet(features, 512, (), num_classes, global_pool=True)


@register_model(
    "vgg11",
    kind="conv",
    description="VGG-11 (config A) with BN, ceil-mode pooling, global average pool, Linear(512, classes)",
)
def vgg11(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return VGG-11-BN for small images (``image_size`` does not change the layers)."""
    return vgg(VGG_CONFIGS["vgg11"], in_channels, num_classes)


@register_model(
    "vgg16",
    kind="conv",
    description="VGG-16 (config D) with BN, ceil-mode pooling, global average pool, Linear(512, classes)",
)
def vgg16(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return VGG-16-BN (14,724,042 parameters for 3×32×32 and 10 classes)."""
    return vgg(VGG_CONFIGS["vgg16"], in_channels, num_classes)


@register_model(
    "vgg19",
    kind="conv",
    description="VGG-19 (config E) with BN, ceil-mode pooling, global average pool, Linear(512, classes)",
)
def vgg19(*, in_channels: int, image_size: int, num_classes: int) -> ConvNet:
    """Return VGG-19-BN for small images (``image_size`` does not change the layers)."""
    return vgg(VGG_CONFIGS["vgg19"], in_channels, num_classes)
