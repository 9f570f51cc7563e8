"""Invariants every registered model must satisfy; a newly registered model is tested automatically.

Pruning code relies on these: the final layer is the ``nn.Linear`` ``classifier``; no in-place
operations (forward hooks capture module outputs); Torch-Pruning's DependencyGraph traces the model
and finds channel groups; gradients reach every parameter; conv models run in ``channels_last``.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as functional
import torch_pruning
from torch import nn

from secateurs.errors import UsageError
from secateurs.models import MODEL_KINDS, MODELS, ModelEntry, build_model

MODEL_NAMES = MODELS.names()

EXPECTED_MODELS = {
    "lenet300", "mlp-lap", "lenet5", "conv2", "conv4", "conv6", "cnn-bn4", "cnn-bn5",
    "vgg11", "vgg16", "vgg19", "resnet8", "resnet20", "resnet32", "resnet56", "preresnet29",
    "resnet18", "resnet50", "mobilenetv2",
}  # fmt: skip


def test_every_model_file_registers_its_models() -> None:
    assert set(MODEL_NAMES) >= EXPECTED_MODELS


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_entry_follows_the_contract(name: str) -> None:
    entry = MODELS.get(name)
    assert isinstance(entry, ModelEntry)
    assert entry.name == name
    assert entry.kind in MODEL_KINDS
    assert entry.description.strip()
    assert entry.min_image_size >= 1
    parameters = inspect.signature(entry.factory).parameters
    assert set(parameters) == {"in_channels", "image_size", "num_classes"}
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in parameters.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_backward_on_28x28_grayscale(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10)
    inputs = torch.randn(2, 1, 28, 28)
    logits = model(inputs)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()

    functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    total_squared_norm = 0.0
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient reaches {parameter_name}"
        assert torch.isfinite(parameter.grad).all(), f"{name}: non-finite gradient in {parameter_name}"
        total_squared_norm += float(parameter.grad.pow(2).sum())
    assert total_squared_norm > 0.0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_on_32x32_colour(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_classifier_is_the_final_linear_layer(name: str) -> None:
    model = build_model(name, (1, 28, 28), 7).eval()
    classifier = model.classifier
    assert isinstance(classifier, nn.Linear)
    assert classifier.out_features == 7

    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    logits = model(torch.randn(2, 1, 28, 28))
    handle.remove()
    assert len(captured) == 1
    assert captured[0] is logits  # nothing runs after the classifier


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_no_in_place_operations(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10)
    in_place = [module_name for module_name, module in model.named_modules() if getattr(module, "inplace", False)]
    assert in_place == []


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_biases_only_where_there_is_no_batch_norm(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10)
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if any(isinstance(module, nn.BatchNorm2d) for module in model.modules()):
        assert all(convolution.bias is None for convolution in convolutions)
    else:
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        assert all(layer.bias is not None for layer in [*convolutions, *linears])
    assert model.classifier.bias is not None


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dependency_graph_traces_and_finds_groups(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10)
    graph = torch_pruning.DependencyGraph().build_dependency(
        model, example_inputs=torch.randn(1, 1, 28, 28), verbose=False
    )
    groups = list(graph.get_all_groups(ignored_layers=[model.classifier]))
    assert len(groups) >= 1
    prunable = [module for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    assert len(prunable) >= 2
    grouped_modules = {dependency.target.module for group in groups for dependency, _ in group}
    assert model.classifier in grouped_modules  # its input channels follow the last hidden layer


@pytest.mark.parametrize("name", [name for name in MODEL_NAMES if MODELS.get(name).kind == "conv"])
def test_conv_models_give_the_same_logits_in_channels_last(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10).eval()
    inputs = torch.randn(2, 3, 32, 32)
    expected = model(inputs)
    model = model.to(memory_format=torch.channels_last)
    actual = model(inputs.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_min_image_size_is_accepted_and_tight(name: str) -> None:
    entry = MODELS.get(name)
    size = entry.min_image_size
    model = build_model(name, (1, size, size), 10).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    if size == 1:
        return
    with pytest.raises(UsageError, match=f">= {size}"):
        build_model(name, (1, size - 1, size - 1), 10)
    # one pixel less really is too small for the architecture
    with warnings.catch_warnings(), pytest.raises(RuntimeError):
        warnings.simplefilter("ignore")  # zero-sized Linear layers warn at initialisation
        too_small = entry.factory(in_channels=1, image_size=size - 1, num_classes=10).eval()
        too_small(torch.randn(2, 1, size - 1, size - 1))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_structure_and_seeded_initialisation_are_deterministic(name: str) -> None:
    torch.manual_seed(123)
    first = build_model(name, (1, 28, 28), 10).state_dict()
    torch.manual_seed(123)
    second = build_model(name, (1, 28, 28), 10).state_dict()
    assert list(first) == list(second)
    for key, tensor in first.items():
        assert torch.equal(tensor, second[key]), key
