"""Accuracy and loss of a model over a batch iterator."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    count: int


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Top-1 accuracy and mean cross-entropy over ``batches``; eval mode, restored afterwards."""
    was_training = model.training
    model.eval()
    correct = 0
    total = 0
    loss_sum = 0.0
    try:
        with torch.no_grad():
            for x, y in batches:
                logits = model(x)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(dim=1) == y).sum())
                total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        return Evaluation(accuracy=0.0, loss=float("nan"), count=0)
    return Evaluation(accuracy=correct / total, loss=loss_sum / total, count=total)
