"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors in most tests are tiny, and two OpenMP threads on a busy
    2-core machine spin-wait each other into a many-fold slowdown. Restores the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
