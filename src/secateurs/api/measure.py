"""What a run reports about a model: accuracy on the splits, sizes, sparsities, latency, robustness."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from secateurs.config import CalibrationConfig, MeasureConfig, RobustnessConfig
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.types import Splits, TensorData
from secateurs.latency.timing import measure_latency
from secateurs.metrics.accuracy import evaluate
from secateurs.metrics.counts import SizeReport, size_report
from secateurs.metrics.robustness import AttackConfig, PixelSpace, robust_accuracy
from secateurs.models import ModelReference, build_model
from secateurs.runs.record import Metrics
from secateurs.sparsity.masks import baked_copy
from secateurs.training.loop import has_conv


def eval_loader(
    data: TensorData, normalization: Normalization, model: nn.Module, batch_size: int = 1000
) -> BatchLoader:
    return BatchLoader(data, batch_size, normalization, channels_last=has_conv(model))


def calibration_batches(
    splits: Splits, normalization: Normalization, calibration: CalibrationConfig, model: nn.Module
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``calibration.size`` training images, normalised, un-augmented, in fixed batches."""
    subset = splits.train.subset(slice(0, calibration.size))
    return list(BatchLoader(subset, calibration.batch_size, normalization, channels_last=has_conv(model)))


def accuracy_metrics(
    model: nn.Module, splits: Splits, normalization: Normalization, subset: int | None = None
) -> Metrics:
    """Validation and test accuracy/loss (the test set is read only here, for the final report).

    ``subset`` evaluates only the first images of each split. Mutates nothing (the model is put in
    eval mode for the evaluation and back).
    """
    found: dict[str, float] = {}
    for split, data in (("val", splits.val), ("test", splits.test)):
        if subset is not None:
            data = data.subset(slice(0, subset))
        result = evaluate(model, eval_loader(data, normalization, model))
        found[f"{split}_accuracy"] = float(result.accuracy)
        found[f"{split}_loss"] = float(result.loss)
    return Metrics.model_validate(found)


def measure_model(
    model: nn.Module,
    splits: Splits,
    normalization: Normalization,
    *,
    dense: SizeReport,
    measure: MeasureConfig,
    eval_subset: int | None = None,
) -> Metrics:
    """Everything run.json reports about a model: accuracies, sizes, sparsities, latency, robustness.

    Sparsities are against ``dense``; latency (when ``measure.latency``) is timed on a copy with the
    masks multiplied in. Mutates nothing.
    """
    input_shape = splits.dataset.input_shape
    found: dict[str, Any] = accuracy_metrics(model, splits, normalization, eval_subset).to_json()
    found.update(size_report(model, input_shape, dense_reference=dense).to_dict())
    if measure.robustness is not None:
        found["robustness"] = robustness_metrics(model, splits.test, normalization, measure.robustness)
    if measure.latency:
        timing = measure_latency(
            baked_copy(model), input_shape, batch_sizes=measure.latency_batches, repeats=measure.latency_repeats
        )
        found["latency_ms"] = {
            key: (value["median_ms"] if isinstance(value, dict) else value) for key, value in timing.items()
        }
        found["latency_p90_ms"] = {key: value["p90_ms"] for key, value in timing.items() if isinstance(value, dict)}
    return Metrics.model_validate(found)


def robustness_metrics(
    model: nn.Module, data: TensorData, normalization: Normalization, config: RobustnessConfig
) -> dict[str, Any]:
    """FGSM/PGD accuracy on the first ``config.examples`` images of ``data`` (ε in pixel units).

    Returns `secateurs.runs.record.Robustness`'s JSON object (accuracies per attack and ε, clean
    accuracy, the settings).
    """

    subset = data.subset(slice(0, config.examples))
    attacks = AttackConfig(
        epsilons=config.epsilons,
        attacks=config.attacks,
        pgd_steps=config.pgd_steps,
        pgd_step_size=config.pgd_step_size,
        seed=config.seed,
    )
    loader = BatchLoader(subset, config.batch_size, normalization)
    accuracy = robust_accuracy(model, loader, PixelSpace(normalization.mean, normalization.std), attacks)
    return {
        **accuracy,
        "examples": len(subset),
        "split": "test",
        **config.model_dump(mode="json", exclude={"examples"}),
    }


def reference_size(model: str | ModelReference, splits: Splits) -> SizeReport:
    """Size of the unpruned model ``model`` (a zoo name or a `ModelReference`): the reference every
    sparsity is measured against."""
    shape = splits.dataset.input_shape
    return size_report(build_model(model, shape, splits.dataset.num_classes), shape)
