"""Run a recipe file: dense training (or ``from`` a run), then pruning and fine-tuning."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secateurs.config import MeasureConfig, Recipe, load_recipe
from secateurs.errors import ConfigError
from secateurs.workflows import RunOptions, load_splits, prune_run, train_run

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 128
"""Longer names would break the file-name limit once ``.NAME.partial`` and suffixes are added."""


def check_name(name: str, what: str = "run name") -> str:
    """``name`` if it is a plain file name (no separators, no ``..``, not absolute, not hidden, not too long)."""
    if not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"{what} {name!r} must be a plain name (letters, digits, '.', '_', '-'; no '/', no '..') "
            f"of at most {MAX_NAME_LENGTH} characters"
        )
    return name


def safe_child(root: Path, name: str, what: str = "run name") -> Path:
    """``root / name`` for a plain name; names with separators, ``..`` or absolute paths are refused.

    A symbolic link already at ``root / name`` is refused too: a run is never written through one.
    """
    child = root / check_name(name, what)
    if child.is_symlink():
        raise ConfigError(f"{what} {name!r}: {child} is a symbolic link; refusing to write through it")
    return child


def run_recipe(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    out_root: Path = Path("runs"),
    overwrite: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run the recipe at ``path``; writes ``OUT_ROOT/NAME/dense`` and ``OUT_ROOT/NAME/pruned``.

    With ``from:`` only the pruned run is written (``OUT_ROOT/NAME``). Returns the runs' run.json.
    """
    recipe: Recipe = load_recipe(path, overrides)
    root = safe_child(out_root, recipe.name)
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
                options=RunOptions(out=dense_dir, overwrite=overwrite, progress=progress, measure=measure),
                splits=splits,
                extra={"recipe": recipe.model_dump(by_alias=True)},
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
                options=RunOptions(out=out, overwrite=overwrite, progress=progress, measure=measure),
                calibration=recipe.calibration,
                data_dir=recipe.data.dir,
                splits=splits,
            )
        )
    return results
