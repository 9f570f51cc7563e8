"""ONNX export of masked models, of a Torch-Pruning model holding an implant-shaped module, metadata.

(The zoo is covered in tests/conformance/test_onnx_export_zoo.py.) Every export is checked by
`export_onnx_model` itself (onnx.checker, onnxruntime vs PyTorch at batches 1 and 3); the tests re-check
independently: the batch axis is symbolic, onnxruntime at a third batch size matches PyTorch to 1e-4,
and pruned weights are still zero in the graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch_pruning as tp
from onnx import numpy_helper
from torch import nn

from secateurs.deploy.export_onnx import INPUT_NAME, OUTPUT_NAME, export_onnx_model, onnx_metadata, onnxruntime_session
from secateurs.models import build_model
from secateurs.runs.record import parse_record
from secateurs.sparsity.masks import MaskStore, plain_state_dict
from secateurs.sparsity.targets import prunable_names

TOLERANCE = 1e-4


def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so folding mistakes would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


def check_file(path: Path, reference: nn.Module, shape: tuple[int, ...], batch: int = 5) -> onnx.ModelProto:
    """The file passes the checker, has a symbolic batch axis and matches `reference` at `batch`."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == INPUT_NAME
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == list(shape)
    x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference(x).numpy()
    (found,) = onnxruntime_session(path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    assert found.shape == expected.shape
    assert float(np.max(np.abs(found - expected))) <= TOLERANCE
    return proto


@pytest.mark.parametrize("name", ["lenet300", "resnet8"])
def test_masked_models_export_with_their_zeros(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(name, (1, 28, 28), 10).eval()
    randomize_batchnorm_(model)
    generator = torch.Generator().manual_seed(1)
    store = MaskStore(model)
    for weight in prunable_names(model):
        store.set_(weight, torch.rand(model.get_parameter(weight).shape, generator=generator) < 0.3)
    reference = build_model(name, (1, 28, 28), 10).eval()
    reference.load_state_dict(plain_state_dict(model))  # the dense model with zeros
    kept_first = int(store.get(prunable_names(model)[0]).sum())
    path = tmp_path / f"{name}-masked.onnx"
    export_onnx_model(model, (1, 28, 28), path)
    proto = check_file(path, reference, (1, 28, 28))
    if name == "lenet300":  # a plain MLP keeps its weight matrices as they are: the zeros are in the file
        first = reference.get_submodule(prunable_names(reference)[0].rsplit(".", 1)[0]).weight
        initializers = [numpy_helper.to_array(t) for t in proto.graph.initializer]
        matching = [a for a in initializers if a.size == first.numel()]
        assert [int(np.count_nonzero(a)) for a in matching] == [kept_first]


class ImplantStandIn(nn.Module):
    """The shape of a neural implant: a k×k conv for some channel slots and a 1×1 conv for the others,
    concatenated and then permuted into the original channel order."""

    order: torch.Tensor

    def __init__(self, in_channels: int, kept: int, implanted: int, order: torch.Tensor) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(in_channels, kept, kernel_size=3, padding=1, bias=False)
        self.pointwise = nn.Conv2d(in_channels, implanted, kernel_size=1, bias=False)
        self.register_buffer("order", order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.spatial(x), self.pointwise(x)], dim=1).index_select(1, self.order)


def test_a_torch_pruning_model_with_an_implant_exports(tmp_path: Path) -> None:
    """Channels removed with Torch-Pruning, then a block's conv replaced by an implant-shaped module."""
    torch.manual_seed(2)
    model = build_model("resnet8", (1, 28, 28), 10).eval()
    randomize_batchnorm_(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 1, 28, 28))
    for layer, removed in ((model.stem[0], [0, 3, 5, 9]), (model.stages[1][0].conv1, list(range(0, 32, 3)))):
        graph.get_pruning_group(layer, tp.prune_conv_out_channels, removed).prune()
    assert model.stem[0].out_channels == 12 and model.stages[1][0].conv1.out_channels == 21
    block = model.stages[0][0]
    assert (block.conv1.in_channels, block.conv1.out_channels) == (12, 16)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    block.conv1 = ImplantStandIn(12, kept=10, implanted=6, order=order)
    path = tmp_path / "resnet8-pruned-implant.onnx"
    export_onnx_model(model, (1, 28, 28), path)
    check_file(path, model, (1, 28, 28))


def test_metadata_carries_the_preprocessing(tmp_path: Path) -> None:
    info = {
        "name": "l300",
        "kind": "train",
        "seed": 0,
        "metrics": {},
        "model": {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10},
        "preprocessing": {"dataset": "fashion-mnist", "input_shape": [1, 28, 28], "mean": [0.286], "std": [0.353]},
    }
    metadata = onnx_metadata(parse_record(info))
    path = tmp_path / "l300.onnx"
    export_onnx_model(build_model("lenet300", (1, 28, 28), 10), (1, 28, 28), path, metadata=metadata)
    stored = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert json.loads(stored["secateurs.preprocessing"]) == info["preprocessing"]
    assert json.loads(stored["secateurs.mean"]) == [0.286] and json.loads(stored["secateurs.std"]) == [0.353]
    assert json.loads(stored["secateurs.input_shape"]) == [1, 28, 28]
    assert json.loads(stored["secateurs.model"])["name"] == "lenet300" and stored["secateurs.run"] == "l300"
