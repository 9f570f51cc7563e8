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
from secateurs.models import build_model
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
) -> dict[str, float]:
    """Validation and test accuracy/loss (the test set is read only here, for the final report)."""
    metrics: dict[str, float] = {}
    for split, data in (("val", splits.val), ("test", splits.test)):
        if subset is not None:
            data = data.subset(slice(0, subset))
        result = evaluate(model, eval_loader(data, normalization, model))
        metrics[f"{split}_accuracy"] = result.accuracy
        metrics[f"{split}_loss"] = result.loss
    return metrics


def measure_model(
    model: nn.Module,
    splits: Splits,
    normalization: Normalization,
    *,
    dense: SizeReport,
    measure: MeasureConfig,
    eval_subset: int | None = None,
) -> dict[str, Any]:
    """Everything run.json reports about a model: accuracies, sizes, sparsities and latency."""
    input_shape = splits.dataset.input_shape
    metrics: dict[str, Any] = accuracy_metrics(model, splits, normalization, eval_subset)
    metrics.update(size_report(model, input_shape, dense_reference=dense).to_dict())
    if measure.robustness is not None:
        metrics["robustness"] = robustness_metrics(model, splits.test, normalization, measure.robustness)
    if measure.latency:
        timing = measure_latency(
            baked_copy(model), input_shape, batch_sizes=measure.latency_batches, repeats=measure.latency_repeats
        )
        metrics["latency_ms"] = {
            key: (value["median_ms"] if isinstance(value, dict) else value) for key, value in timing.items()
        }
        metrics["latency_p90_ms"] = {key: value["p90_ms"] for key, value in timing.items() if isinstance(value, dict)}
    return metrics


def robustness_metrics(
    model: nn.Module, data: TensorData, normalization: Normalization, config: RobustnessConfig
) -> dict[str, Any]:
    """FGSM/PGD accuracy on the first ``config.examples`` images of ``data`` (ε in pixel units)."""

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
    return {**accuracy, "examples": len(subset), "split": "test", **config.model_dump(exclude={"examples"})}


def reference_size(model_name: str, splits: Splits) -> SizeReport:
    """Size of the unpruned registry model: the reference every sparsity is measured against."""
    shape = splits.dataset.input_shape
    return size_report(build_model(model_name, shape, splits.dataset.num_classes), shape)
