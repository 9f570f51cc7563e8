"""secateurs: prune neural networks and prove what the pruning bought.

The public API (see `secateurs.api`)::

    import secateurs as sec
    result = sec.prune(model, method="magnitude", sparsity=0.9, example_inputs=x)

Attributes are imported lazily so that ``secateurs.cli`` starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = (
    "PruneResult",
    "RunOptions",
    "evaluate",
    "evaluate_run",
    "export",
    "gradual",
    "load",
    "masked_equivalent",
    "prune",
    "prune_run",
    "run_recipe",
    "save",
    "train",
    "train_run",
)
_EXPORTS = {
    **{name: "secateurs.api" for name in _API},
    "DataConfig": "secateurs.config",
    "MaskStore": "secateurs.sparsity.masks",
    "PruneConfig": "secateurs.config",
    "TrainConfig": "secateurs.config",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'secateurs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
