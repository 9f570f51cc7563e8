"""glibc malloc settings for stable CPU timings (torch-free so the CLI can re-exec before importing torch).

Measured on the project machine (ENVIRONMENT.md): with glibc's default thresholds batch-256 inference
swung between 160 and 230 ms; with these it was a stable 102 ms. glibc reads them at process start.
"""

from __future__ import annotations

import os

ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def allocator_env_is_set() -> bool:
    """Whether every variable of `ALLOCATOR_ENV` has its value in this process's environment."""
    return all(os.environ.get(key) == value for key, value in ALLOCATOR_ENV.items())
