"""Per-layer targets (`PruneConfig.layer_sparsity`): exact kept counts, the YAML file, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import secateurs as sec
from secateurs.config import PruneConfig, validate
from secateurs.errors import ConfigError, UsageError
from secateurs.methods import METHODS
from secateurs.models import build_model

SIZES = {"features.0.weight": 784 * 300, "features.2.weight": 300 * 100, "classifier.weight": 100 * 10}


def config(**fields: object) -> PruneConfig:
    parsed: PruneConfig = validate(PruneConfig, {"method": "magnitude", **fields}, "prune options")
    return parsed


def lenet300() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet300", (1, 28, 28), 10)


def test_each_listed_layer_keeps_its_own_count_and_unlisted_layers_get_sparsity() -> None:
    model = lenet300()
    targets = {"features.0.weight": 0.9, "features.2.weight": 0.25}
    original = {name: model.get_parameter(name).detach().clone() for name in SIZES}
    result = sec.prune(model, "magnitude", 0.5, example_inputs=torch.zeros(2, 1, 28, 28), layer_sparsity=targets)
    assert result.masks is not None
    counts = result.masks.counts()
    assert counts["features.0.weight"] == (23_520, 235_200)  # round(0.1 · 235,200)
    assert counts["features.2.weight"] == (22_500, 30_000)
    assert counts["classifier.weight"] == (500, 1_000)  # not listed: --sparsity 0.5
    # magnitude within each layer: every kept weight is at least as large as every removed one
    for name in SIZES:
        mask, values = result.masks.get(name), original[name].abs()
        assert float(values[mask].min()) >= float(values[~mask].max())


def test_a_yaml_file_is_read_and_sparsity_defaults_to_zero(tmp_path: Path) -> None:
    path = tmp_path / "layer_sparsity.yaml"
    path.write_text("# from sensitivity\nfeatures.0.weight: 0.75\nclassifier.weight: 0\n")
    parsed = config(layer_sparsity=str(path))
    assert parsed.layer_sparsity == {"features.0.weight": 0.75, "classifier.weight": 0.0}
    assert parsed.sparsity == 0.0


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"layer_sparsity": {"features.0.weight": 1.0}}, "every layer_sparsity must be in [0, 1)"),
        ({"layer_sparsity": {"a.weight": 0.5}, "rates": [0.5]}, "either layer_sparsity or rates"),
        ({"layer_sparsity": "/nonexistent/layer_sparsity.yaml"}, "cannot read layer_sparsity file"),
    ],
)
def test_bad_targets_are_config_errors(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**fields)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_method_without_per_layer_targets_refuses_them() -> None:
    parsed = config(method="hap", layer_sparsity={"a.weight": 0.5})  # the schema knows no method
    with pytest.raises(ConfigError, match="method 'hap' does not take per-layer targets"):
        METHODS.get("hap").check_config(parsed)
    with pytest.raises(ConfigError, match="does not take per-layer targets"):
        sec.prune(lenet300(), parsed, example_inputs=torch.zeros(2, 1, 28, 28))


def test_a_file_that_is_not_a_mapping_of_numbers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- features.0.weight\n- 0.5\n")
    with pytest.raises(ConfigError, match="must map weight names to numbers"):
        config(layer_sparsity=str(path))


def test_unknown_names_and_global_methods_are_usage_errors() -> None:
    inputs = torch.zeros(2, 1, 28, 28)
    with pytest.raises(UsageError, match=r"features\.9\.weight, not prunable weights here"):
        sec.prune(lenet300(), "magnitude", 0.0, example_inputs=inputs, layer_sparsity={"features.9.weight": 0.5})
    with pytest.raises(UsageError, match="ranks globally"):
        sec.prune(lenet300(), "magnitude-global", 0.0, example_inputs=inputs, layer_sparsity={"classifier.weight": 0.5})
