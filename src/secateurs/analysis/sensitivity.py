"""Per-layer sensitivity analysis: prune one layer at a time over a sparsity grid, measure, restore.

The analysis of Distiller's ``sensitivity_analysis`` and NNI's ``SensitivityAnalysis`` (both gone
from maintained toolkits), built from secateurs' own pieces. For every prunable weight ``l`` and
every sparsity ``s`` of the grid:

1. score the layer's weights with the registered ``magnitude`` scorer (``|w|`` of the effective,
   masked weight);
2. select with the allocator's layer-wise rule at granularity ``g`` (`select_layerwise`): the layer
   keeps ``max(min_keep, round((1 - s) · units))`` units of highest score — for ``filter`` a unit is an
   output filter (a Linear row) scored by the sum of its ``|w|`` (its L1 norm);
3. zero the removed weights in place, evaluate accuracy and mean cross-entropy on the given batches
   (the validation split), then copy the saved weights back, bit for bit.

Only the analysed layer changes at a time; every other layer keeps its weights. Weights a run had
already removed (live masks) stay removed and count toward ``s``, as in iterative pruning. Filter
granularity zeroes a filter's weights but not its bias or BatchNorm (masked, not physical, removal).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from secateurs.allocation.elements import select_layerwise
from secateurs.api import load_splits
from secateurs.api.measure import eval_loader
from secateurs.config import DataConfig
from secateurs.errors import RunDirError, UsageError
from secateurs.metrics.accuracy import evaluate
from secateurs.runs.directory import LoadedRun, load_run, recorded_normalization
from secateurs.scoring import SCORERS
from secateurs.scoring.base import ScoreContext
from secateurs.sparsity.fractions import check_sparsity
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SensitivityPoint:
    """One measurement: ``layer`` pruned to ``sparsity`` (requested), everything else intact."""

    layer: str
    sparsity: float
    kept: int
    total: int
    accuracy: float
    loss: float

    @property
    def realised_sparsity(self) -> float:
        return 1.0 - self.kept / self.total


@dataclass(frozen=True)
class Sensitivity:
    """The whole analysis: the unpruned model's accuracy and one point per (layer, sparsity)."""

    granularity: str
    sparsities: tuple[float, ...]
    layers: tuple[str, ...]
    sizes: dict[str, int]
    baseline_accuracy: float
    baseline_loss: float
    points: tuple[SensitivityPoint, ...]

    def curve(self, layer: str) -> list[SensitivityPoint]:
        """The points of ``layer``, by increasing sparsity."""
        return sorted((p for p in self.points if p.layer == layer), key=lambda p: p.sparsity)

    def drop(self, point: SensitivityPoint) -> float:
        """Accuracy lost against the unpruned model (positive = worse)."""
        return self.baseline_accuracy - point.accuracy


def parse_sparsities(values: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated grid; every value checked to be in [0, 1)."""
    if not values:
        raise UsageError("the sensitivity sparsity grid is empty; give values in [0, 1), e.g. 0.5,0.9")
    return tuple(sorted({check_sparsity(v, "a sensitivity sparsity") for v in values}))


@contextlib.contextmanager
def layer_pruned(masks: MaskStore, name: str, keep: torch.Tensor) -> Iterator[None]:
    """Zero the entries of weight ``name`` where ``keep`` is false; restore them exactly on exit.

    Mutates the raw parameter (``original`` under a mask parametrization) in place, and only for
    the duration of the ``with`` block.
    """
    tensor = masks.original(name)
    saved = tensor.detach().clone()
    try:
        with torch.no_grad():
            tensor.mul_(keep.to(device=tensor.device, dtype=tensor.dtype))
        yield
    finally:
        with torch.no_grad():
            tensor.copy_(saved)


def keep_mask(
    model: nn.Module, masks: MaskStore, name: str, sparsity: float, granularity: str, min_keep: int
) -> tuple[torch.Tensor, int]:
    """The keep-mask of ``name`` at ``sparsity`` by magnitude, and how many entries stay non-removed."""
    scores = SCORERS.get("magnitude").score(model, [name], ScoreContext(generator=torch.Generator()))
    alive = {name: masks.get(name)} if name in masks else None
    keep = select_layerwise(scores, sparsity, lookup_granularity(granularity), alive=alive, min_keep=min_keep)[name]
    effective = keep & alive[name] if alive else keep
    return keep, int(effective.sum())


def layer_sensitivity(
    model: nn.Module,
    batches: Sequence[Batch],
    sparsities: Sequence[float],
    *,
    granularity: str = "element",
    layers: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    min_keep: int = 1,
) -> Sensitivity:
    """Measure every (layer, sparsity) pair on ``batches`` (see the module docstring).

    ``layers`` defaults to every prunable weight (`prunable_names`, minus ``exclude`` patterns). The
    model is left exactly as it was (weights restored, eval/train mode restored by `evaluate`).
    """
    grid = parse_sparsities(sparsities)
    lookup_granularity(granularity)  # unknown names fail before any work
    names = list(layers) if layers is not None else prunable_names(model, exclude=exclude)
    masks = MaskStore.attached(model)
    baseline = evaluate(model, batches)
    points = []
    for name in names:
        for sparsity in grid:
            keep, kept = keep_mask(model, masks, name, sparsity, granularity, min_keep)
            with layer_pruned(masks, name, keep):
                result = evaluate(model, batches)
            points.append(SensitivityPoint(name, sparsity, kept, keep.numel(), result.accuracy, result.loss))
            log.debug("%s at %g: accuracy %.4f", name, sparsity, result.accuracy)
        log.info("sensitivity of %s: %s", name, " ".join(f"{p.accuracy:.3f}" for p in points[-len(grid) :]))
    sizes = {name: int(masks.original(name).numel()) for name in names}
    return Sensitivity(
        granularity=granularity,
        sparsities=grid,
        layers=tuple(names),
        sizes=sizes,
        baseline_accuracy=baseline.accuracy,
        baseline_loss=baseline.loss,
        points=tuple(points),
    )


def validation_batches(
    run: LoadedRun, *, data_dir: str | None = None, subset: int | None = None, batch_size: int = 1000
) -> list[Batch]:
    """The validation split of the dataset ``run`` was trained on, preprocessed as recorded, in fixed batches."""
    recorded = run.record.config.data
    data = DataConfig.from_record(
        recorded.model_dump(mode="json") if recorded is not None else None, data_dir, str(run.path)
    )
    splits = load_splits(data)
    if run.input_shape != splits.dataset.input_shape:
        raise RunDirError(
            f"{run.path} was trained on inputs {run.input_shape}, the data has {splits.dataset.input_shape}"
        )
    validation = splits.val if subset is None else splits.val.subset(slice(0, subset))
    normalization = recorded_normalization(run)
    return list(eval_loader(validation, normalization, run.model, batch_size))


def run_sensitivity(
    path: Path,
    sparsities: Sequence[float],
    *,
    granularity: str = "element",
    exclude: Sequence[str] = (),
    min_keep: int = 1,
    data_dir: str | None = None,
    subset: int | None = None,
) -> Sensitivity:
    """`layer_sensitivity` of the finished run at ``path`` on its validation split (nothing is written)."""
    grid = parse_sparsities(sparsities)
    lookup_granularity(granularity)
    run = load_run(Path(path))
    batches = validation_batches(run, data_dir=data_dir, subset=subset)
    return layer_sensitivity(run.model, batches, grid, granularity=granularity, exclude=exclude, min_keep=min_keep)
