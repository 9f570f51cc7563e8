"""Per-layer sensitivity: flat for a layer that cannot matter, equal to a hand evaluation, model restored."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from secateurs.analysis.layer_targets import scale_to_target, tolerated_sparsity, weighted_sparsity
from secateurs.analysis.sensitivity import layer_sensitivity, parse_sparsities
from secateurs.analysis.sensitivity_report import TargetRule, tolerated, write_sensitivity
from secateurs.errors import UsageError
from secateurs.sparsity.masks import MaskStore


class TwoPaths(nn.Module):
    """A trained conv path, plus a side conv that only ever sees zeros: its weights cannot change the output."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(1, 6, 3)
        self.classifier = nn.Linear(24, 3)
        self.side = nn.Conv2d(1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.hidden(x)).flatten(1)
        return self.classifier(features) + self.side(x * 0).mean(dim=(2, 3))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: two OpenMP threads on a busy 2-core machine only spin-wait each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread: None) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 1, 4, 4, generator=generator)
    teacher = torch.randn(16, 3, generator=generator)
    y = (x.flatten(1) @ teacher).argmax(dim=1)
    torch.manual_seed(0)
    model = TwoPaths()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:400]), y[:400]).backward()
        optimizer.step()
    model.eval()
    batches = [(x[400:500], y[400:500]), (x[500:], y[500:])]
    return model, batches


def hand_evaluation(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(x)
    correct = int((logits.argmax(dim=1) == y).sum())
    return correct / len(y), float(nn.functional.cross_entropy(logits, y))


@pytest.mark.parametrize("granularity", ["element", "filter"])
def test_a_layer_that_sees_only_zeros_is_flat(trained, granularity: str) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    result = layer_sensitivity(model, batches, [0.3, 0.6, 0.9], granularity=granularity)
    assert result.layers == ("hidden.weight", "classifier.weight", "side.weight")
    assert result.baseline_accuracy > 0.8  # the model learned the task
    side = result.curve("side.weight")
    assert [p.accuracy for p in side] == [result.baseline_accuracy] * 3
    assert [p.loss for p in side] == [result.baseline_loss] * 3
    hidden = result.curve("hidden.weight")
    assert result.drop(hidden[-1]) > 0.05  # the relevant layer is not flat


def test_table_numbers_equal_a_hand_evaluation(trained) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    result = layer_sensitivity(model, batches, [0.5], granularity="element", layers=["hidden.weight"])
    (point,) = result.points
    pruned = copy.deepcopy(model)
    weight = pruned.hidden.weight.detach()
    order = weight.abs().flatten().argsort()
    removed = 54 - round(0.5 * 54)
    with torch.no_grad():
        weight.view(-1)[order[:removed]] = 0.0
    accuracy, loss = hand_evaluation(pruned, batches)
    assert (point.kept, point.total) == (27, 54)
    assert point.accuracy == accuracy
    assert point.loss == pytest.approx(loss, rel=1e-6)
    assert result.baseline_accuracy == hand_evaluation(model, batches)[0]


def test_filter_granularity_removes_the_filters_of_smallest_l1_norm(trained) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    result = layer_sensitivity(model, batches, [0.5], granularity="filter", layers=["hidden.weight"])
    (point,) = result.points
    pruned = copy.deepcopy(model)
    norms = pruned.hidden.weight.detach().abs().sum(dim=(1, 2, 3))
    with torch.no_grad():
        pruned.hidden.weight[norms.argsort()[:3]] = 0.0
    accuracy, loss = hand_evaluation(pruned, batches)
    assert (point.kept, point.total) == (27, 54)
    assert point.accuracy == accuracy
    assert point.loss == pytest.approx(loss, rel=1e-6)


def test_the_model_is_restored_bit_for_bit(trained) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_sensitivity(model, batches, [0.2, 0.95], granularity="element")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_existing_masks_stay_and_count_toward_the_sparsity(trained) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    masked = copy.deepcopy(model)
    store = MaskStore.attached(masked)
    keep = torch.ones(6, 1, 3, 3, dtype=torch.bool)
    keep[:, :, 0, :] = False  # 18 of 54 removed: a third
    store.set_(name="hidden.weight", mask=keep)
    result = layer_sensitivity(masked, batches, [0.2, 0.5], layers=["hidden.weight"])
    low, high = result.curve("hidden.weight")
    assert low.kept == 36 and low.accuracy == result.baseline_accuracy  # below the mask's sparsity: nothing more
    assert high.kept == 27
    assert torch.equal(store.get("hidden.weight"), keep)
    assert torch.count_nonzero(store.original("hidden.weight")[~keep]) == 0


def test_bad_grids_and_granularities_are_usage_errors(trained) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    assert parse_sparsities([0.9, 0.5, 0.5]) == (0.5, 0.9)
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        parse_sparsities([0.5, 1.0])
    with pytest.raises(UsageError, match="empty"):
        parse_sparsities([])
    with pytest.raises(UsageError, match="granularity"):
        layer_sensitivity(model, batches, [0.5], granularity="diagonal")


def test_tolerated_sparsity_stops_at_the_first_failure() -> None:
    curve = [(0.1, 0.001), (0.3, 0.01), (0.5, 0.02), (0.7, 0.004)]
    assert tolerated_sparsity(curve, 0.01) == 0.3  # one point of drop at 0.3 still meets 0.01
    assert tolerated_sparsity(curve, 0.0005) == 0.0
    assert tolerated_sparsity(curve, 0.05) == 0.7


def test_scaling_keeps_ratios_and_hits_the_overall_target() -> None:
    tolerated_by_layer = {"a": 0.5, "b": 0.25, "c": 0.0}
    sizes = {"a": 100, "b": 100, "c": 100}
    # 0.3 of 300 weights = 90 = α (0.5·100 + 0.25·100) → α = 1.2
    targets = scale_to_target(tolerated_by_layer, sizes, 0.3, cap=0.95)
    assert targets == pytest.approx({"a": 0.6, "b": 0.3, "c": 0.0})
    # cap 0.5: a saturates (50 weights), b gives the other 40 → 0.4
    capped = scale_to_target(tolerated_by_layer, sizes, 0.3, cap=0.5)
    assert capped == pytest.approx({"a": 0.5, "b": 0.4, "c": 0.0})
    assert weighted_sparsity(capped, sizes) == pytest.approx(0.3)
    assert scale_to_target(tolerated_by_layer, sizes, 0.0) == {"a": 0.0, "b": 0.0, "c": 0.0}
    with pytest.raises(UsageError, match="out of reach"):
        scale_to_target(tolerated_by_layer, sizes, 0.5, cap=0.5)
    with pytest.raises(UsageError, match="no layer tolerates"):
        scale_to_target({"a": 0.0}, {"a": 10}, 0.1)


def test_files_hold_the_analysis(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, batches = trained
    result = layer_sensitivity(model, batches, [0.3, 0.9])
    limits = tolerated(result, 0.02)
    assert limits["side.weight"] == 0.9
    rule = TargetRule(tolerance=0.02, target=0.5, cap=0.95)
    targets = scale_to_target(limits, result.sizes, 0.5, 0.95)
    written = write_sensitivity(tmp_path, result, tolerance=0.02, source="tiny", targets=targets, rule=rule)
    assert sorted(p.name for p in written) == sorted(
        ["sensitivity.csv", "sensitivity.md", "sensitivity.png", "sensitivity.json", "layer_sparsity.yaml"]
    )
    lines = (tmp_path / "sensitivity.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 2
    side = next(line for line in lines if line.startswith("side.weight,0.9,"))
    assert side.endswith(f",{result.baseline_accuracy!r},{result.baseline_loss!r},0.0,0.9")
    mapping = yaml.safe_load((tmp_path / "layer_sparsity.yaml").read_text())
    assert list(mapping) == list(result.layers)
    assert weighted_sparsity(mapping, result.sizes) == pytest.approx(0.5, abs=1e-5)
    markdown = (tmp_path / "sensitivity.md").read_text()
    unpruned = f"{100 * result.baseline_accuracy:.2f}"
    assert f"| side.weight | 27 | {unpruned} | {unpruned} | 0.9 |" in markdown
