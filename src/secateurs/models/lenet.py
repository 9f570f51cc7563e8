"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

Two 5×5 convolutions (6 and 16 filters), each followed by ReLU and 2×2 max pooling, then fully
connected 120 → 84 → classes. The original network saw 32×32 inputs; for smaller images (28×28
MNIST/Fashion-MNIST) the first convolution pads by 2 so the flattened features are again 16·5·5.
The flatten size is computed from the image size, so any square image of at least 12 pixels works.
Biases everywhere, no normalisation, ReLU instead of the original scaled tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.models.registry import register_model

KERNEL_SIZE = 5
PADDED_BELOW = 32
"""Images smaller than this get padding 2 on the first convolution."""


def lenet5_feature_size(image_size: int) -> int:
    """Return the side length of the feature map after the second pooling layer."""
    padding = 2 if image_size < PADDED_BELOW else 0
    size = (image_size + 2 * padding - KERNEL_SIZE + 1) // 2
    return (size - KERNEL_SIZE + 1) // 2


class LeNet5(nn.Module):
    """LeNet-5 with ReLU; ``features`` (convolutions), ``hidden`` (two Linear layers), ``classifier``."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        padding = 2 if image_size < PADDED_BELOW else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, KERNEL_SIZE, padding=padding),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, KERNEL_SIZE),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(2),
        )
        side = lenet5_feature_size(image_size)
        self.hidden = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=False),
            nn.Linear(120, 84),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes)."""
        x = torch.flatten(self.features(x), 1)
        return self.classifier(self.hidden(x))


@register_model(
    "lenet5",
    kind="conv",
    description="LeNet-5: conv 6@5×5, conv 16@5×5 with max pooling, then 120-84-classes (LeCun et al. 1998)",
    min_image_size=12,
)
def lenet5(*, in_channels: int, image_size: int, num_classes: int) -> LeNet5:
    """Return LeNet-5 (61,706 parameters for 1×28×28 or 1×32×32 and 10 classes)."""
    return LeNet5(in_channels, image_size, num_classes)
