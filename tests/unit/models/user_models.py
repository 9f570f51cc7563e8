"""Test scaffolding for external models: a model file (importing a sibling), a package, 3×64×64 data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from secateurs.data.synthetic import make_synthetic

BLOCKS = '''
import torch
from torch import nn


class Head(nn.Linear):
    """A subclass of nn.Linear, as timm's Linear is: handled by isinstance, not by exact type."""


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
'''

MODEL_FILE = '''
from torch import nn

from user_blocks import Head, Residual  # a file beside this one


def make(num_classes, in_channels, width=8):
    """A small residual CNN; num_classes and in_channels come from the data."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        Residual(width),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        Head(2 * width, num_classes),
    )


def returns_dict(num_classes):
    return {"model": nn.Linear(3, num_classes)}


class TwoHeads(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, num_classes))

    def forward(self, x):
        out = self.body(x)
        return out, out


def two_heads(num_classes):
    return TwoHeads(num_classes)


def fails(num_classes):
    raise ValueError("no such width")


NOT_A_FACTORY = 3
'''


def write_model_file(directory: Path, *, width_default: int = 8, comment: str = "") -> Path:
    """``directory/user_net.py`` (with ``user_blocks.py`` beside it); returns the model file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "user_blocks.py").write_text(BLOCKS)
    path = directory / "user_net.py"
    path.write_text(MODEL_FILE.replace("width=8", f"width={width_default}") + comment)
    return path


def write_rgb_npz(path: Path, *, num_train: int = 96, num_test: int = 32, num_classes: int = 4) -> Path:
    """Synthetic 3×64×64 images with ``num_classes`` classes as an npz archive (the ``npz`` dataset)."""
    data = make_synthetic(num_train=num_train, num_test=num_test, num_classes=num_classes, image_size=64, channels=3)
    np.savez(
        path,
        x_train=data.train.x.numpy(),
        y_train=data.train.y.numpy(),
        x_test=data.test.x.numpy(),
        y_test=data.test.y.numpy(),
    )
    return path
