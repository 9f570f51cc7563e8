"""Every committed suite passes the checks `secateurs bench` makes before training (real Fashion-MNIST).

The same checks refuse bad suites (tests/unit/bench/test_budget.py); this makes sure they refuse none of
the suites the README's numbers come from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.api import load_splits
from secateurs.bench.runner import check_cells
from secateurs.bench.suite import load_suite

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[path.stem for path in SUITES])
def test_committed_suite_passes_the_pre_training_checks(path: Path) -> None:
    suite = load_suite(path)
    check_cells(suite, load_splits(suite.data))
