"""Pruning methods. Importing this package imports every module in it, and each registers itself."""

import importlib
import pkgutil

from secateurs.methods.base import METHODS, Method, PruneContext, PruneOutcome, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "PruneContext", "PruneOutcome", "register_method"]
