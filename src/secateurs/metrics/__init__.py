"""Measurements of a model that need no timing: parameter, non-zero and MAC counts, accuracy, robustness.

Latency is `secateurs.latency`.
"""

from secateurs.metrics.counts import (
    SizeReport,
    count_macs,
    count_nonzero_params,
    count_params,
    count_prunable,
    prunable_weights,
    size_report,
)

__all__ = [
    "SizeReport",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "count_prunable",
    "prunable_weights",
    "size_report",
]
