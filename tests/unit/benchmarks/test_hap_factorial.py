"""The HAP factorial report: the variance decomposition, Spearman agreement and the budget suite, on known rows."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import yaml

from secateurs.bench.results import ResultRow
from secateurs.runs.record import Metrics

CRITERION_EFFECT = {"hap": 1.0, "l2-filter": 3.0, "oracle-channel": 5.0}
POLICY_EFFECT = {"global": 0.0, "layerwise": -2.0, "normalized": 1.0}


def row(
    method: str, scope: str, seed: int, accuracy: float, *, draw: int | None = None, scores: dict | None = None
) -> ResultRow:
    options = {"probe_seed": draw} if draw is not None else {}
    return ResultRow(
        key=f"resnet20|{method}-{scope}-{draw}|0.7|{seed}",
        suite="hap-factorial",
        model="resnet20",
        method=method,
        label=f"{method}-{scope}",
        sparsity=0.7,
        seed=seed,
        config={"scope": scope, "options": options},
        metrics=Metrics(test_accuracy=accuracy / 100 + 0.01, val_accuracy=accuracy / 100 - 0.05),
        metrics_before_finetune=Metrics(test_accuracy=accuracy / 100, val_accuracy=accuracy / 100),
        train_epochs=1.0,
        method_info={"channel_scores": scores or {}},
    )


@pytest.fixture(scope="module")
def factorial(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("hap_factorial")


def test_an_additive_design_has_no_interaction_and_exact_main_effects(factorial: ModuleType) -> None:
    rows = [
        row(method, scope, seed, 60 + a + b)
        for method, a in CRITERION_EFFECT.items()
        for scope, b in POLICY_EFFECT.items()
        for seed in (0, 1)
    ]
    parts = factorial.variance_components(rows, 0.7, "cut")
    # population variances of the effects (points²): criterion {1, 3, 5} → 8/3; policy {0, -2, 1} → 14/9
    assert parts["criterion"] == pytest.approx(8 / 3)
    assert parts["allocation"] == pytest.approx(14 / 9)
    assert parts["interaction"] == pytest.approx(0.0, abs=1e-12)
    assert parts["noise"] == pytest.approx(0.0, abs=1e-12)


def test_noise_is_the_within_cell_variance_of_the_replicates(factorial: ModuleType) -> None:
    rows = [
        row(m, s, seed, 70 + (1.0 if seed else -1.0))
        for m in CRITERION_EFFECT
        for s in POLICY_EFFECT
        for seed in (0, 1)
    ]
    parts = factorial.variance_components(rows, 0.7, "finetuned")
    assert parts["noise"] == pytest.approx(2.0)  # sample variance of {69, 71} (+1 point after fine-tuning)
    assert parts["criterion"] == pytest.approx(0.0, abs=1e-12) and parts["allocation"] == pytest.approx(0.0, abs=1e-12)


def test_spearman_handles_ties_and_orientation(factorial: ModuleType) -> None:
    assert factorial.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert factorial.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert factorial.average_ranks([5, 1, 5, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert factorial.spearman([1, 1, 1], [1, 2, 3]) is None


def test_agreement_with_the_oracle_within_layers_and_pooled(factorial: ModuleType) -> None:
    oracle = {"a": [0.1, 0.2, 0.3], "b": [1.0, 2.0, 3.0]}
    same_order = {"a": [1.0, 2.0, 3.0], "b": [0.1, 0.2, 0.3]}  # within layers identical, pooled scrambled
    rows = [
        row("oracle-channel", "global", 0, 70, scores=oracle),
        row("hap", "global", 0, 70, draw=0, scores=same_order),
        row("hap", "layerwise", 0, 70, draw=0, scores=same_order),  # same replicate: counted once
    ]
    within, pooled = factorial.agreement(rows)["hap"]
    assert within == [pytest.approx(1.0)] and len(pooled) == 1
    assert pooled[0] == pytest.approx(factorial.spearman([1, 2, 3, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 1, 2, 3]))


def test_the_budget_suite_takes_the_best_policy_on_validation(factorial: ModuleType) -> None:
    rows = [
        row(m, s, seed, 60 + a + b)
        for m, a in CRITERION_EFFECT.items()
        for s, b in POLICY_EFFECT.items()
        for seed in (0, 1)
    ]
    rows = [
        r.model_copy(update={"sparsity": target, "key": f"{r.key}|{target}"}) for r in rows for target in (0.7, 0.85)
    ]
    best = factorial.best_policies(rows)
    assert best[0.7] == {name: "normalized" for name in CRITERION_EFFECT}
    suite = yaml.safe_load(factorial.budget_suite(rows, "results/x.jsonl"))
    labels = [entry["label"] for entry in suite["methods"]]
    assert "hap-normalized-p0-85" in labels and "oracle-channel-normalized-70" in labels
    assert len(labels) == 2 * 3  # one entry per criterion and target (hap: its first probe draw)
    assert suite["finetune"] == {**suite["finetune"], "epochs": 1, "train_subset": 10000}


def test_the_accuracy_table_shows_the_cut_alone_when_the_grid_was_not_fine_tuned(factorial: ModuleType) -> None:
    tuned = [row("hap", s, seed, 70.0 + seed) for s in POLICY_EFFECT for seed in (0, 1)]
    cut_only = [r.model_copy(update={"train_epochs": 0.0, "metrics": r.metrics_before_finetune}) for r in tuned]
    table = factorial.accuracy_table(cut_only, 0.7)
    assert "global: cut %" in table and "→" not in table
    assert "| hap (2) | 70.50 ± 0.71 |" in table  # mean and sample std of {70, 71}
    assert "cut → fine-tuned" in factorial.accuracy_table(tuned, 0.7)
    assert "after the cut" in factorial.variance_table(cut_only)
    assert "after fine-tuning" not in factorial.variance_table(cut_only)
    assert "after fine-tuning" in factorial.variance_table(tuned)
