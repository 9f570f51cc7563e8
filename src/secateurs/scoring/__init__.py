"""Importance scores. Importing this package imports every module in it, and each registers itself."""

import importlib
import pkgutil

from secateurs.scoring.base import SCORERS, ScoreContext, ScorerEntry, register_scorer

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SCORERS", "ScoreContext", "ScorerEntry", "register_scorer"]
