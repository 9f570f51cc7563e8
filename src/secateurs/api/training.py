"""Training a model in place, and building a registry model deterministically from a seed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.types import Splits
from secateurs.metrics.accuracy import Evaluation
from secateurs.metrics.accuracy import evaluate as evaluate_batches
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore
from secateurs.training.loop import Callback, Trainer, TrainSummary
from secateurs.training.optim import initialize_


def build_initialized(name: str, splits: Splits, init: str, seed: int) -> nn.Module:
    """The registry model for ``splits``' shapes, initialised deterministically from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(name, splits.dataset.input_shape, splits.dataset.num_classes)
    initialize_(model, init, torch.Generator().manual_seed(seed))
    return model


def train(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    *,
    seed: int = 0,
    masks: MaskStore | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> TrainSummary:
    """Train ``model`` in place (masked weights stay zero when ``masks`` is given)."""
    trainer = Trainer(
        model,
        splits,
        config,
        seed=seed,
        masks=masks,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    return trainer.fit(resume=resume)


def evaluate(model: nn.Module, data: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``data`` batches (already normalised)."""
    return evaluate_batches(model, data)
