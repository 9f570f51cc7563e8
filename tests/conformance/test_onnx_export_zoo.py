"""Every registered model exports to ONNX: checker passes, batch axis dynamic, onnxruntime == PyTorch.

A newly registered model is tested automatically. `export_onnx_model` checks the graph itself
(onnx.checker, onnxruntime at batches 1 and 3); this test re-checks the written file independently at
batch 5, with non-trivial BatchNorm statistics so that folding mistakes would show. Models whose export
takes several seconds (many modules or many parameters) are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from secateurs.deploy.export_onnx import INPUT_NAME, OUTPUT_NAME, export_onnx_model, onnxruntime_session
from secateurs.models import MODELS, build_model

TOLERANCE = 1e-4
SLOW_MODULES = 90
SLOW_PARAMS = 5_000_000


def input_shape(name: str) -> tuple[int, int, int]:
    side = max(28, MODELS.get(name).min_image_size)
    return (1, side, side)


def zoo_cases() -> list[object]:
    cases = []
    for name in MODELS.names():
        with torch.device("meta"):  # sizes only, nothing allocated
            model = build_model(name, input_shape(name), 10)
        modules = sum(1 for _ in model.modules())
        params = sum(p.numel() for p in model.parameters())
        big = modules > SLOW_MODULES or params > SLOW_PARAMS
        cases.append(pytest.param(name, marks=pytest.mark.slow) if big else name)
    return cases


def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


@pytest.mark.parametrize("name", zoo_cases())
def test_every_zoo_model_exports(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    shape = input_shape(name)
    model = build_model(name, shape, 10).eval()
    randomize_batchnorm_(model)
    path = tmp_path / f"{name}.onnx"
    summary = export_onnx_model(model, shape, path)
    assert summary["checker"] == "passed" and summary["onnxruntime_max_abs_error"] <= TOLERANCE
    assert summary["bytes"] == path.stat().st_size and summary["input"]["shape"] == ["batch", *shape]

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == INPUT_NAME
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # the batch axis is symbolic
    assert [d.dim_value for d in dims[1:]] == list(shape)
    x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x).numpy()
    (found,) = onnxruntime_session(path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    assert found.shape == expected.shape == (5, 10)
    assert float(np.max(np.abs(found - expected))) <= TOLERANCE
