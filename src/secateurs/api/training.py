"""Training a model in place, and building a zoo or external model deterministically from a seed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.types import Splits
from secateurs.metrics.accuracy import Evaluation
from secateurs.metrics.accuracy import evaluate as evaluate_batches
from secateurs.models import BuiltModel, ModelReference, resolve_model
from secateurs.sparsity.masks import MaskStore
from secateurs.training.loop import Callback, Trainer, TrainSummary
from secateurs.training.optim import initialize_


def build_initialized(name: str | ModelReference, splits: Splits, init: str, seed: int) -> nn.Module:
    """The model ``name`` (a zoo name or a `ModelReference`) for ``splits``' shapes, initialised
    deterministically from ``seed`` (`resolve_initialized`'s module)."""
    return resolve_initialized(name, splits, init, seed).module


def resolve_initialized(name: str | ModelReference, splits: Splits, init: str, seed: int) -> BuiltModel:
    """`build_initialized` with the model's provenance (what run.json records about an external model).

    Seeds the global generator with ``seed`` before building (the model's own initialisation), then
    applies ``init`` from a generator seeded with ``seed``.
    """
    torch.manual_seed(seed)
    built = resolve_model(name, splits.dataset.input_shape, splits.dataset.num_classes)
    initialize_(built.module, init, torch.Generator().manual_seed(seed))
    return built


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
