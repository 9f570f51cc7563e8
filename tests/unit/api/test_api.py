"""`secateurs.prune / save / load` on models defined here (not the zoo): a concat of two branches, a
grouped conv and a squeeze-excite block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.errors import ConfigError, UsageError


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))
        return x * scale


class BranchyNet(nn.Module):
    """stem → (3×3 branch ‖ 1×1 branch) → cat → grouped conv → BN → squeeze-excite → pool → classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.wide = nn.Conv2d(8, 6, 3, padding=1)
        self.point = nn.Conv2d(8, 2, 1, bias=False)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.excite = SqueezeExcite(8, 4)
        self.classifier = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.cat([self.wide(x), self.point(x)], dim=1)
        x = self.excite(torch.relu(self.norm(self.grouped(x))))
        return self.classifier(x.mean(dim=(2, 3)))


PRUNABLE = {
    "stem.weight": 8 * 3 * 9,
    "wide.weight": 6 * 8 * 9,
    "point.weight": 2 * 8,
    "grouped.weight": 8 * 2 * 9,
    "excite.reduce.weight": 4 * 8,
    "excite.expand.weight": 8 * 4,
    "classifier.weight": 5 * 8,
}
TOTAL = sum(PRUNABLE.values())  # 216 + 432 + 16 + 144 + 32 + 32 + 40 = 912


def branchy(seed: int = 0) -> BranchyNet:
    torch.manual_seed(seed)
    model = BranchyNet()
    model.eval()
    return model


def inputs(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def nonzero_prunable(model: nn.Module) -> int:
    return sum(int((model.get_submodule(name.rsplit(".", 1)[0]).weight != 0).sum()) for name in PRUNABLE)


def test_magnitude_global_realises_the_sparsity(tmp_path: Path) -> None:
    model = branchy()
    dense_weights = {name: model.get_parameter(name).detach().clone() for name in PRUNABLE}
    result = sec.prune(model, "magnitude", 0.8, example_inputs=inputs(), scope="global")
    assert TOTAL == 912
    kept = nonzero_prunable(result.model)
    assert abs(kept - round(0.2 * TOTAL)) <= 1  # 182 of 912
    assert result.size.nonzero_prunable == kept and result.dense.prunable_params == TOTAL
    assert abs(result.size.sparsity_prunable - 0.8) <= 1 / TOTAL
    assert result.masks is not None and sorted(result.masks.names()) == sorted(PRUNABLE)
    assert result.info["layers"] == {name: list(result.masks.counts()[name]) for name in PRUNABLE}
    # one layer fell below min_keep = 1 and keeps its largest weight: 182 + 1
    emptied = [name for name, (count, _) in result.masks.counts().items() if count == 1]
    assert kept == 182 + len(emptied) and len(emptied) == 1
    # without min_keep, exactly the budget, and every kept |w| is at least every removed |w|
    strict = sec.prune(branchy(), "magnitude", 0.8, example_inputs=inputs(), scope="global", min_keep=0)
    assert strict.masks is not None and nonzero_prunable(strict.model) == 182
    kept_values = torch.cat([dense_weights[n][strict.masks.get(n)].abs() for n in PRUNABLE])
    removed_values = torch.cat([dense_weights[n][~strict.masks.get(n)].abs() for n in PRUNABLE])
    assert float(kept_values.min()) >= float(removed_values.max())
    assert int(strict.masks.get(emptied[0]).sum()) == 0


def test_layerwise_magnitude_realises_the_sparsity_in_every_layer() -> None:
    result = sec.prune(branchy(), "magnitude", 0.75, example_inputs=inputs())
    assert result.masks is not None
    assert result.masks.counts() == {name: (round(0.25 * size), size) for name, size in PRUNABLE.items()}


def test_report_contains_the_numbers() -> None:
    result = sec.prune(branchy(), "magnitude", 0.8, example_inputs=inputs(), scope="global")
    report = result.report()
    params = sum(p.numel() for p in branchy().parameters())
    assert result.dense.params == params == result.size.params
    lines = report.splitlines()
    assert lines[0] == "magnitude at sparsity 0.8"
    assert lines[2].split() == ["parameters", f"{params:,}", f"{params:,}"]
    assert lines[3].split()[-2:] == [f"{result.dense.nonzero_params:,}", f"{result.size.nonzero_params:,}"]
    assert lines[4].split()[-2:] == [f"{TOTAL:,}", f"{result.size.nonzero_prunable:,}"]
    assert lines[5].split()[-2:] == [f"{result.dense.effective_macs:,}", f"{result.size.effective_macs:,}"]
    assert f"sparsity: {result.size.sparsity_prunable:.4f} of prunable weights" in report
    assert result.size.nonzero_prunable == 183  # 182 + min_keep of the emptied layer: 1 − 183/912 = 0.7993
    assert "sparsity: 0.7993 of prunable weights" in report


def test_save_and_load_reproduce_outputs(tmp_path: Path) -> None:
    model = branchy()
    x = inputs()
    result = sec.prune(model, "magnitude", 0.8, example_inputs=x, scope="global")
    expected = result.model(x)
    out = sec.save(result, tmp_path / "pruned")
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "masks.safetensors", "model.safetensors", "run.json"]
    loaded = sec.load(out, model_factory=lambda: branchy(seed=9))
    assert torch.equal(loaded.model(x), expected)
    assert loaded.masks is not None and result.masks is not None
    for name in PRUNABLE:
        assert torch.equal(loaded.masks.get(name), result.masks.get(name))
    assert loaded.record.model.to_json() == {"name": "custom", "input_shape": [3, 8, 8], "num_classes": 5}
    assert loaded.record.metrics.nonzero_prunable == result.size.nonzero_prunable
    assert loaded.record.config.method is not None and loaded.record.config.method["sparsity"] == 0.8
    assert loaded.record.seed is None and loaded.record.history.method == result.history
    log = (out / "log.txt").read_text()  # the API call, what the method did, the metrics, the files
    assert "command: Python API: secateurs.save" in log and "method: magnitude (unstructured)" in log
    assert f"sparsity: {result.size.sparsity_prunable:.4f} of prunable weights" in log
    assert f"files: {out}/ holds log.txt, masks.safetensors, model.safetensors, run.json" in log
    with pytest.raises(UsageError, match="already holds a finished run"):
        sec.save(result, out)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_random_is_seeded(scope: str) -> None:
    def masks(seed: int) -> dict[str, torch.Tensor]:
        result = sec.prune(branchy(), "random", 0.6, example_inputs=inputs(), seed=seed, scope=scope)
        assert result.masks is not None
        return result.masks.state_dict()

    first, again, other = masks(0), masks(0), masks(1)
    assert all(torch.equal(first[name], again[name]) for name in PRUNABLE)
    assert any(not torch.equal(first[name], other[name]) for name in PRUNABLE)
    assert abs(sum(int(m.sum()) for m in first.values()) - sum(int(m.sum()) for m in other.values())) <= len(PRUNABLE)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="method 'magnitude': unknown key 'strength'"):
        sec.prune(branchy(), "magnitude", 0.5, example_inputs=inputs(), strength=2)
    with pytest.raises(ConfigError, match=r"sparsity: sparsity must be in \[0, 1\)"):
        sec.prune(branchy(), "magnitude", 1.0, example_inputs=inputs())
    with pytest.raises(UsageError, match=r"unknown method 'prune-it'; accepted: .*magnitude"):
        sec.prune(branchy(), "prune-it", 0.5, example_inputs=inputs())


def test_pruning_twice_prunes_further_and_keeps_removed_weights_removed() -> None:
    model = branchy()
    first = sec.prune(model, "magnitude", 0.5, example_inputs=inputs())
    assert first.masks is not None
    before = first.masks.state_dict()
    second = sec.prune(model, "random", 0.75, example_inputs=inputs())
    assert second.masks is not None
    for name, mask in second.masks.items():
        assert not bool((mask & ~before[name]).any())
        assert int(mask.sum()) == round(0.25 * PRUNABLE[name])
