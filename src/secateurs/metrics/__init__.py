"""Measurements of a model: parameter, non-zero and MAC counts; inference latency."""

from secateurs.metrics.counts import (
    SizeReport,
    count_macs,
    count_nonzero_params,
    count_params,
    count_prunable,
    prunable_weights,
    size_report,
)
from secateurs.metrics.latency import (
    ALLOCATOR_ENV,
    allocator_env_is_set,
    compare_latency,
    contains_sparse_csr,
    measure_latency,
)

__all__ = [
    "ALLOCATOR_ENV",
    "SizeReport",
    "allocator_env_is_set",
    "compare_latency",
    "contains_sparse_csr",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "count_prunable",
    "measure_latency",
    "prunable_weights",
    "size_report",
]
