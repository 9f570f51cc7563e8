"""Run a recipe file: dense training (or ``from`` a run), then pruning and fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from secateurs.api.runs import RunOptions, load_splits, prune_run, train_run
from secateurs.config import MeasureConfig, Recipe, load_recipe
from secateurs.io.paths import safe_child
from secateurs.runs.record import RunRecord


def run_recipe(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    out_root: Path = Path("runs"),
    overwrite: bool = False,
    progress: bool = False,
    invocation: str | None = None,
) -> list[RunRecord]:
    """Run the recipe at ``path``; writes ``OUT_ROOT/NAME/dense`` and ``OUT_ROOT/NAME/pruned``.

        With ``from:`` only the pruned run is written (``OUT_ROOT/NAME``). Returns the runs' records.
    ``invocation`` (the command line) heads each run's log.txt; by default it names the recipe.
    """
    recipe: Recipe = load_recipe(path, overrides)
    root = safe_child(out_root, recipe.name)
    invocation = invocation or f"Python API: run_recipe({str(path)!r}, overrides={list(overrides)!r})"
    measure: MeasureConfig = recipe.measure
    results = []
    if recipe.source is None:
        assert recipe.model is not None and recipe.train is not None  # guaranteed by Recipe validation
        splits = load_splits(recipe.data)
        dense_dir = root / "dense" if recipe.method is not None else root
        results.append(
            train_run(
                recipe.model,
                recipe.data,
                recipe.train,
                seed=recipe.seed,
                options=RunOptions(
                    out=dense_dir, overwrite=overwrite, progress=progress, measure=measure, invocation=invocation
                ),
                splits=splits,
                recipe=recipe.model_dump(
                    mode="json", by_alias=True, exclude=set() if recipe.model_args else {"model_args"}
                ),
                model_args=recipe.model_args,
            )
        )
        source, out = dense_dir, root / "pruned"
    else:
        splits = None
        source, out = Path(recipe.source), root
    if recipe.method is not None:
        results.append(
            prune_run(
                source,
                recipe.method,
                recipe.finetune,
                seed=recipe.seed,
                options=RunOptions(
                    out=out, overwrite=overwrite, progress=progress, measure=measure, invocation=invocation
                ),
                calibration=recipe.calibration,
                data_dir=recipe.data.dir,
                splits=splits,
            )
        )
    return results
