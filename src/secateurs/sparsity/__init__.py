"""Masks, granularities, schedules and per-layer targets of unstructured pruning.

Importing this package registers every granularity: the element one (`sparsity.granularity`) and
the balanced structured ones (window, kernel, window+kernel, N:M, block: `sparsity.granularities_structured`).
"""

from secateurs.sparsity import granularities_structured as _structured  # noqa: F401  (registers them)
