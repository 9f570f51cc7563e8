"""The HAP tables: the side by side (mean ± std over seeds) and the short-vs-long fine-tuning comparison."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

from secateurs.bench.results import ResultRow, parse_row


@pytest.fixture(scope="module")
def hap_table(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("hap_table")


def row(label: str, seed: int, before: float, after: float, sparsity: float = 0.7) -> ResultRow:
    """A version-1 row (``before_finetune``), read as the script reads the committed results."""
    return parse_row(
        {
            "key": f"resnet20|{label}|{sparsity:g}|{seed}",
            "suite": "hap",
            "model": "resnet20",
            "method": label.split("-")[0],
            "label": label,
            "seed": seed,
            "sparsity": sparsity,
            "before_finetune": {"test_accuracy": before},
            "metrics": {"test_accuracy": after, "params": 1000, "macs": 5000},
            "method_info": {"realised": {"params_removed": sparsity}},
        }
    )


def test_side_by_side_gives_mean_and_sample_std_over_seeds(hap_table: ModuleType) -> None:
    text = hap_table.table([row("hap", 0, 0.30, 0.89), row("hap", 1, 0.26, 0.90), row("l2-filter", 0, 0.5, 0.9)])
    # mean 0.895, sample std of (0.89, 0.90) = 0.00707; one seed: no ±
    assert "| 0.7 of params | hap | 2 | 70.00 ± 0.00 | 1,000 | 5,000 | 28.00 ± 2.83 | 89.50 ± 0.71 | – | – |" in text
    assert "| 0.7 of params | l2-filter | 1 | 70.00 | 1,000 | 5,000 | 50.00 | 90.00 | – | – |" in text


def test_budget_table_pairs_seeds_and_compares_with_hap(hap_table: ModuleType) -> None:
    short = [row("hap", 0, 0.29, 0.89), row("hap", 1, 0.27, 0.90), row("l2-filter", 0, 0.50, 0.90),
             row("l2-filter", 1, 0.52, 0.91), row("taylor", 0, 0.40, 0.90)]  # fmt: skip
    long = [row("hap", 0, 0.29, 0.92), row("hap", 1, 0.27, 0.93), row("l2-filter", 0, 0.50, 0.93),
            row("l2-filter", 1, 0.53, 0.93), row("taylor", 1, 0.41, 0.93)]  # fmt: skip
    lines = hap_table.budget_table(short, long).splitlines()
    # hap: short 89.5, long 92.5: +3.00; l2-filter: long 93.0, 0.5 above hap; seed 1 pruned differently
    assert "| 0.7 of params | hap | 2 | 28.00 ± 1.41 | 89.50 ± 0.71 | 92.50 ± 0.71 | +3.00 | +0.00 |" in lines
    l2 = "| 0.7 of params | l2-filter | 2 | 51.00 ± 1.41 / 51.50 ± 2.12 | 90.50 ± 0.71 | 93.00 ± 0.00 | +2.50 | +0.50 |"
    assert l2 in lines
    assert not any("taylor" in line for line in lines)  # no seed in both suites


def test_trace_noise_counts_negative_and_indistinguishable_traces(
    load_benchmark: Callable[[str], ModuleType],
) -> None:
    noise = load_benchmark("hap_trace_noise")
    tensors = {
        "trace:a": torch.tensor([1.0, -0.1, 0.5]),
        "error:a": torch.tensor([0.1, 0.2, 0.3]),  # |t| < 2·SE: -0.1 (0.4) and 0.5 (0.6); 1.0 is resolved
        "trace:b": torch.tensor([-2.0]),
        "error:b": torch.tensor([0.5]),  # negative but 4 SE from zero
        "__generator__": torch.zeros(3, dtype=torch.uint8),
    }
    row = noise.summarise(tensors, probes=100)
    # relative SE: 0.1, 2.0, 0.6, 0.25; torch.median takes the lower middle value (as HAP's run.json does)
    assert row == {
        "probes": 100,
        "channels": 4,
        "negative": 2,
        "within_2se_of_zero": 2,
        "median_relative_se": pytest.approx(0.25),
    }
