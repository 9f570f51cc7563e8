"""Optimizers and learning-rate schedules as pure functions of the step.

The LR is recomputed from the step at every step (no scheduler object to save), so a resumed run
follows exactly the schedule of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from secateurs.config import TrainConfig


def build_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with ``config.lr`` and ``config.weight_decay``."""
    params = [p for p in parameters if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The LR at optimizer step ``step`` (0-based), for a budget of ``config.total_steps(steps_per_epoch)`` steps.

    - linear warm-up from 0 over ``warmup_steps`` (or ``warmup_epochs`` converted to steps);
    - ``constant``: ``lr``;
    - ``step``: ``lr · gamma^k`` with k the number of milestones (`TrainConfig.milestone_steps`) passed;
    - ``cosine``: ``lr · ½ (1 + cos(π · t / T))`` over the post-warm-up steps.

    A budget in steps with its warm-up and milestones in steps gives the same LR at every step on
    any dataset; a budget in epochs is converted with ``steps_per_epoch``.
    """
    total = max(1, config.total_steps(steps_per_epoch))
    warmup = config.warmup_steps_for(steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        passed = sum(1 for m in config.milestone_steps(steps_per_epoch) if step >= m)
        return config.lr * config.gamma**passed
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def initialize_(model: nn.Module, scheme: str, generator: torch.Generator) -> None:
    """Re-initialise conv/linear weights in place (``default`` leaves PyTorch's init); biases to 0.

    ``xavier-normal`` is LAP's initialisation; ``kaiming-normal`` (fan_out, ReLU) the ResNet one.
    """
    if scheme == "default":
        return
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        weight = module.weight
        fan_in = weight[0].numel()
        fan_out = weight.shape[0] * (weight[0, 0].numel() if weight.dim() > 2 else 1)
        std = math.sqrt(2.0 / (fan_in + fan_out)) if scheme == "xavier-normal" else math.sqrt(2.0 / fan_out)
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
        if module.bias is not None:
            module.bias.zero_()
