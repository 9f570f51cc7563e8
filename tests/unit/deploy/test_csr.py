"""CSR inference: exact small products, masked-model equivalence, per-layer choices, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.deploy.csr import (
    CSRConv2d,
    CSRLinear,
    choose_layers,
    convert_to_csr,
    csr_matrix,
)
from secateurs.errors import UsageError
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names


def random_masks(model: nn.Module, keep: float, seed: int = 0) -> MaskStore:
    """Element masks keeping about `keep` of every Conv2d/Linear weight (masked weights become 0)."""
    generator = torch.Generator().manual_seed(seed)
    store = MaskStore(model)
    for name in prunable_names(model):
        shape = model.get_parameter(name).shape
        store.set_(name, torch.rand(shape, generator=generator) < keep)
    return store


def test_csr_linear_hand_computed() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    sparse = CSRLinear.from_dense(layer)
    assert sparse.weight.layout == torch.sparse_csr
    assert sparse.weight.crow_indices().tolist() == [0, 1, 3]
    assert sparse.weight.col_indices().tolist() == [1, 0, 2]
    assert sparse.weight.values().tolist() == [2.0, 1.0, -1.0]
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    # row 1: 2·2 + 0.5 = 4.5; 1 - 3 - 0.5 = -2.5 / row 2: 2·(-1) + 0.5 = -1.5; 0 - 4 - 0.5 = -4.5
    with torch.inference_mode():  # addmm with the sparse matrix on the left works here (F.linear does not)
        y = sparse(x)
    assert y.tolist() == [[4.5, -2.5], [-1.5, -4.5]]
    assert y.T.is_contiguous()  # the (out × N) product, viewed: the next CSR layer needs no copy


def test_csr_linear_without_bias_and_with_leading_dimensions() -> None:
    layer = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) < 0.3)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(CSRLinear.from_dense(layer)(x), layer(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "bias"), [(1, 0, 1, True), (2, 1, 1, False), (1, 2, 2, True), (2, 0, 1, True)]
)
def test_csr_conv_matches_conv2d(stride: int, padding: int, dilation: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel_size=3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape) < 0.2)
    x = torch.randn(4, 3, 11, 9)
    sparse = CSRConv2d.from_dense(conv)
    assert tuple(sparse.weight.shape) == (5, 27)
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation)
        found = sparse(x)
        found_channels_last = sparse(x.contiguous(memory_format=torch.channels_last))
    assert found.shape == expected.shape
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(found_channels_last, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp-lap", "lenet300"])
def test_masked_mlp_equals_csr_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10).eval()
    random_masks(model, keep=0.1)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    conversion = convert_to_csr(model)
    assert all(layer.storage == "csr" for layer in conversion.layers)
    assert sum(isinstance(m, CSRLinear) for m in conversion.model.modules()) == len(conversion.layers)
    with torch.inference_mode():
        found = conversion.model(x)
        single = conversion.model(x[:1])
    assert (found - expected).abs().max() <= 1e-5
    assert (single - expected[:1]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["lenet5", "resnet8", "cnn-bn4"])
def test_masked_cnn_equals_csr_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10).eval()
    random_masks(model, keep=0.1)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    conversion = convert_to_csr(model)
    assert any(isinstance(m, CSRConv2d) for m in conversion.model.modules())
    with torch.no_grad():
        found = conversion.model(x)
    assert (found - expected).abs().max() <= 1e-5


def test_choices_follow_the_density_threshold() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, :5] = 1.0  # 5 of 100: density 0.05
        model[2].weight.zero_()
        model[2].weight[:2] = 1.0  # 20 of 100: density 0.2, not below 0.2
        model[3].weight.fill_(1.0)
    choices = {layer.name: layer for layer in choose_layers(model)}
    assert choices["0"].nonzeros == 5 and choices["0"].density == 0.05 and choices["0"].storage == "csr"
    assert choices["2"].density == 0.2 and choices["2"].storage == "dense"
    assert choices["3"].storage == "dense"
    assert choose_layers(model, density_threshold=0.25)[1].storage == "csr"
    conversion = convert_to_csr(model)
    assert isinstance(conversion.model[0], CSRLinear)
    assert type(conversion.model[2]) is nn.Linear  # dense layers stay dense
    summary = conversion.summary()
    assert summary["csr_layers"] == 1 and summary["dense_layers"] == 2
    assert summary["csr_nonzeros"] == 5 and summary["csr_entries"] == 100


def test_grouped_and_reflect_padded_convs_stay_dense() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=4, bias=False),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", bias=False),
        nn.Conv2d(4, 4, 3, padding="same", bias=False),
    )
    with torch.no_grad():
        for conv in model:
            conv.weight.zero_()
    reasons = [layer.reason for layer in choose_layers(model)]
    assert [layer.storage for layer in choose_layers(model)] == ["dense", "dense", "dense"]
    assert "groups=4" in reasons[0] and "reflect" in reasons[1] and "same" in reasons[2]
    with pytest.raises(UsageError, match="nothing to gain"):
        convert_to_csr(model)


def test_a_dense_model_is_refused_with_the_reason() -> None:
    model = build_model("lenet300", (1, 28, 28), 10)
    with pytest.raises(UsageError) as error:
        convert_to_csr(model)
    message = str(error.value)
    assert "nothing to gain" in message and "20 %" in message and "density 1.000" in message
    assert "\n" not in message


def test_conversion_leaves_the_model_alone() -> None:
    model = build_model("lenet300", (1, 28, 28), 10)
    random_masks(model, keep=0.05)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    convert_to_csr(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, True])
def test_bad_thresholds(threshold: float) -> None:
    with pytest.raises(UsageError, match="density threshold"):
        choose_layers(nn.Linear(2, 2), density_threshold=threshold)


def test_csr_matrix_uses_int32_indices_and_drops_zeros() -> None:
    matrix = csr_matrix(torch.tensor([[0.0, 3.0], [0.0, 0.0], [4.0, 5.0]]))
    assert matrix.crow_indices().dtype == torch.int32 and matrix.col_indices().dtype == torch.int32
    assert matrix.crow_indices().tolist() == [0, 1, 1, 3]
    assert torch.equal(matrix.to_dense(), torch.tensor([[0.0, 3.0], [0.0, 0.0], [4.0, 5.0]]))
    with pytest.raises(UsageError, match="2-D"):
        csr_matrix(torch.zeros(2, 2, 2))
