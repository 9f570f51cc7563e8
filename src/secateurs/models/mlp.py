"""Fully connected networks: LeNet-300-100 and the deeper MLP of the lookahead-pruning paper.

`lenet300` is LeNet-300-100 (LeCun et al. 1998), the fully connected baseline of most unstructured
pruning papers: flatten → 300 → 100 → classes, ReLU between layers. `mlp-lap` is the
784-500-500-500-500-10 network that Park et al. (2020, "Lookahead: A Far-Sighted Alternative of
Magnitude-based Pruning", arXiv 2002.04809) prune on MNIST/Fashion-MNIST. Both use biases and no
normalisation; the input size is C·H·W of the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.models.registry import register_model


class MultilayerPerceptron(nn.Module):
    """Flatten, then ``Linear → ReLU`` for each hidden width, then the ``classifier`` Linear."""

    def __init__(self, input_features: int, hidden_widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = input_features
        for width in hidden_widths:
            layers.append(nn.Linear(width_in, width))
            layers.append(nn.ReLU(inplace=False))
            width_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, num_classes), for images of shape (N, C, H, W)."""
        x = torch.flatten(x, 1)
        return self.classifier(self.features(x))


@register_model(
    "lenet300",
    kind="mlp",
    description="LeNet-300-100: fully connected C·H·W-300-100-classes with ReLU (LeCun et al. 1998)",
)
def lenet300(*, in_channels: int, image_size: int, num_classes: int) -> MultilayerPerceptron:
    """Return LeNet-300-100 for square images (266,610 parameters for 1×28×28 and 10 classes)."""
    return MultilayerPerceptron(in_channels * image_size * image_size, (300, 100), num_classes)


@register_model(
    "mlp-lap",
    kind="mlp",
    description="C·H·W-500-500-500-500-classes MLP with ReLU, as pruned in lookahead pruning (Park et al. 2020)",
)
def mlp_lap(*, in_channels: int, image_size: int, num_classes: int) -> MultilayerPerceptron:
    """Return the four-hidden-layer MLP of LAP (1,149,010 parameters for 1×28×28 and 10 classes)."""
    return MultilayerPerceptron(in_channels * image_size * image_size, (500, 500, 500, 500), num_classes)
