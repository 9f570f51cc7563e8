"""The CSR model file: round trip file → model, header content, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from secateurs.deploy.csr import CSRConv2d, CSRLinear, convert_to_csr
from secateurs.deploy.csr_file import CSR_FORMAT, csr_header, load_csr_model, save_csr_model
from secateurs.errors import RunDirError
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names

SPEC = {"name": "lenet5", "input_shape": [1, 28, 28], "num_classes": 10}
PREPROCESSING = {"dataset": "fashion-mnist", "input_shape": [1, 28, 28], "mean": [0.286], "std": [0.353]}


def masked(name: str, keep: float = 0.1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, (1, 28, 28), 10).eval()
    generator = torch.Generator().manual_seed(seed)
    store = MaskStore(model)
    for weight in prunable_names(model):
        store.set_(weight, torch.rand(model.get_parameter(weight).shape, generator=generator) < keep)
    return model


@pytest.mark.parametrize("name", ["mlp-lap", "lenet5", "cnn-bn4"])
def test_round_trip_reproduces_the_outputs(name: str, tmp_path: Path) -> None:
    model = masked(name)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(x)
    conversion = convert_to_csr(model)
    spec = {"name": name, "input_shape": [1, 28, 28], "num_classes": 10}
    path = tmp_path / "model.csr.safetensors"
    size = save_csr_model(conversion, path, csr_header(conversion, model=spec, preprocessing=PREPROCESSING))
    assert size == path.stat().st_size
    loaded = load_csr_model(path)
    with torch.no_grad():
        direct = conversion.model(x)
        reloaded = loaded.model(x)
    assert torch.equal(reloaded, direct)  # the file holds exactly the converted model
    assert (reloaded - expected).abs().max() <= 1e-5
    kinds = [type(m) for m in loaded.model.modules() if isinstance(m, CSRLinear | CSRConv2d)]
    assert len(kinds) == len(conversion.csr_layers)
    assert loaded.header["preprocessing"] == PREPROCESSING and loaded.header["model"] == spec


def test_file_layout(tmp_path: Path) -> None:
    conversion = convert_to_csr(masked("lenet5"))
    path = tmp_path / "lenet5.csr.safetensors"
    save_csr_model(conversion, path, csr_header(conversion, model=SPEC, preprocessing=PREPROCESSING, source="r"))
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["secateurs"])
    tensors = load_file(str(path))
    assert header["format"] == CSR_FORMAT and header["source"] == "r" and header["plan"] is None
    assert header["density_threshold"] == 0.2
    first = header["csr_layers"]["features.0"]
    assert first["kind"] == "conv2d" and first["shape"] == [6, 25] and first["kernel_size"] == [5, 5]
    weight = conversion.model.get_submodule("features.0").weight
    assert first["nonzeros"] == weight.values().numel()
    assert torch.equal(tensors["features.0.weight.crow_indices"], weight.crow_indices())
    assert torch.equal(tensors["features.0.weight.values"], weight.values())
    assert "features.0.bias" in tensors and "features.0.weight" not in tensors
    assert tensors["classifier.weight.col_indices"].dtype == torch.int32


def test_a_factory_rebuilds_models_outside_the_registry(tmp_path: Path) -> None:
    def factory() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2))

    model = factory()
    with torch.no_grad():
        model[1].weight.mul_(torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) < 0.1)
    conversion = convert_to_csr(model)
    path = tmp_path / "custom.csr.safetensors"
    save_csr_model(conversion, path, csr_header(conversion))
    with pytest.raises(RunDirError, match="model_factory"):
        load_csr_model(path)
    loaded = load_csr_model(path, model_factory=factory)
    x = torch.randn(3, 3, 4)
    with torch.no_grad():
        assert (loaded.model(x) - model(x)).abs().max() <= 1e-6
    assert isinstance(loaded.model[1], CSRLinear) and type(loaded.model[3]) is nn.Linear


def rewrite(path: Path, tensors: dict[str, torch.Tensor], header: dict | None) -> None:
    save_file(tensors, str(path), metadata=None if header is None else {"secateurs": json.dumps(header)})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    conversion = convert_to_csr(masked("lenet5"))
    path = tmp_path / "m.csr.safetensors"
    save_csr_model(conversion, path, csr_header(conversion, model=SPEC))
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["secateurs"])
    return path, load_file(str(path)), header


def test_malformed_files_name_the_problem(saved: tuple[Path, dict[str, torch.Tensor], dict]) -> None:
    path, tensors, header = saved
    with pytest.raises(RunDirError, match="does not exist"):
        load_csr_model(path.with_name("missing.safetensors"))
    rewrite(path, tensors, None)
    with pytest.raises(RunDirError, match="no secateurs CSR header"):
        load_csr_model(path)
    rewrite(path, tensors, {**header, "format": "other/9"})
    with pytest.raises(RunDirError, match="other/9"):
        load_csr_model(path)
    rewrite(path, {k: v for k, v in tensors.items() if k != "hidden.0.weight.values"}, header)
    with pytest.raises(RunDirError, match=r"hidden\.0.*lacks hidden\.0\.weight\.values"):
        load_csr_model(path)
    rewrite(path, {**tensors, "extra": torch.zeros(1)}, header)
    with pytest.raises(RunDirError, match="unexpected extra"):
        load_csr_model(path)
    bad = dict(tensors)
    bad["hidden.0.weight.col_indices"] = bad["hidden.0.weight.col_indices"].clone()
    bad["hidden.0.weight.col_indices"][0] = 10_000  # out of range: the invariant check catches it
    rewrite(path, bad, header)
    with pytest.raises(RunDirError, match=r"hidden\.0.*malformed"):
        load_csr_model(path)
    layers = dict(header["csr_layers"])
    layers["hidden.0"] = {**layers["hidden.0"], "shape": [121, 400]}
    rewrite(path, tensors, {**header, "csr_layers": layers})
    with pytest.raises(RunDirError, match=r"shape \(121, 400\)"):
        load_csr_model(path)
    rewrite(path, tensors, {**header, "csr_layers": {**header["csr_layers"], "nowhere": {"shape": [1, 1]}}})
    with pytest.raises(RunDirError, match="'nowhere' does not exist"):
        load_csr_model(path)
    path.write_bytes(b"not safetensors")
    with pytest.raises(RunDirError, match="not a valid safetensors file"):
        load_csr_model(path)
