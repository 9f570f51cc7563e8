"""Saving a `PruneResult` as a run directory and loading run directories back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from secateurs.api.pruning import PruneResult
from secateurs.runs.directory import LoadedRun, load_run, writing_run


def save(
    result: PruneResult,
    path: str | Path,
    *,
    model_name: str = "custom",
    num_classes: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``result`` as a run directory (model.safetensors, masks/plan, run.json); atomic."""
    out = Path(path)
    input_shape = result.input_shape
    classes = num_classes if num_classes is not None else _num_classes(result.model)
    with writing_run(out, overwrite=overwrite) as stage:
        stage.save_model(result.model)
        stage.save_masks(result.masks)
        stage.save_plan(result.plan)
        stage.commit(
            {
                "kind": "prune",
                "model": {"name": model_name, "input_shape": list(input_shape), "num_classes": classes},
                "preprocessing": {"input_shape": list(input_shape), "mean": None, "std": None},
                "seed": None,
                "config": {"prune": result.config.model_dump()},
                "metrics": result.size.to_dict(),
                "method_info": result.info,
                "history": result.history,
                "timings": {"score_s": result.score_seconds, "prune_s": result.seconds},
                **(extra or {}),
            }
        )
    return out


def load(path: str | Path, model_factory: Callable[[], nn.Module] | None = None) -> LoadedRun:
    """Rebuild a saved run: ``model_factory()`` (or the registry's model), plan replay, weights, masks."""
    return load_run(Path(path), model_factory)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else 0
