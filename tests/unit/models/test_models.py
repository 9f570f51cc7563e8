"""Pinned numbers for the model zoo: parameter counts, layer shapes, strides, and build errors.

Parameter counts are taken on the meta device (no memory, no initialisation), so the ImageNet-size
models cost almost nothing to count.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.models import MODELS, ModelEntry, build_model, model_entry, register_model
from secateurs.models.resnet import Bottleneck


def parameter_count(name: str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    with torch.device("meta"):
        model = build_model(name, input_shape, num_classes)
    return sum(parameter.numel() for parameter in model.parameters())


def count_modules(model: nn.Module, module_type: type[nn.Module], *, kernel_size: int | None = None) -> int:
    return sum(
        1
        for module in model.modules()
        if isinstance(module, module_type)
        and (kernel_size is None or getattr(module, "kernel_size", None) == (kernel_size, kernel_size))
    )


# vgg16 at 3×32×32, 10 classes: the usual 14,728,266 counts convolution biases (64·2 + 128·2 + 256·3
# + 512·6 = 4,224 of them). Here every convolution is followed by BN and has no bias:
# 3×3 weights 14,710,464 + BN weight and bias 2 · 4,224 = 8,448 + classifier 512·10 + 10 = 5,130
# = 14,724,042 = 14,728,266 − 4,224.
# resnet20 at 1×28×28: the paper's zero-padding shortcut (option A) gives 269,434; the two 1×1-conv + BN
# shortcuts (option B) add 16·32 + 64 + 32·64 + 128 = 2,752, so 272,186.
PINNED_PARAMETER_COUNTS = [
    ("lenet300", (1, 28, 28), 10, 266_610),
    ("mlp-lap", (1, 28, 28), 10, 1_149_010),
    ("lenet5", (1, 28, 28), 10, 61_706),
    ("lenet5", (1, 32, 32), 10, 61_706),
    ("conv4", (1, 28, 28), 10, 1_933_258),
    ("resnet20", (1, 28, 28), 10, 272_186),
    ("resnet20", (3, 32, 32), 10, 272_474),
    ("vgg16", (3, 32, 32), 10, 14_724_042),
    ("resnet18", (3, 224, 224), 1000, 11_689_512),
    ("resnet50", (3, 224, 224), 1000, 25_557_032),
    ("mobilenetv2", (3, 224, 224), 1000, 3_504_872),
    ("mobilenetv2", (3, 32, 32), 1000, 3_504_872),
]


@pytest.mark.parametrize(("name", "input_shape", "num_classes", "expected"), PINNED_PARAMETER_COUNTS)
def test_parameter_count_is_pinned(
    name: str, input_shape: tuple[int, int, int], num_classes: int, expected: int
) -> None:
    assert parameter_count(name, input_shape, num_classes) == expected


def test_resnet20_option_b_shortcuts_hold_2752_parameters() -> None:
    model = build_model("resnet20", (1, 28, 28), 10)
    shortcut_parameters = sum(parameter.numel() for name, parameter in model.named_parameters() if ".shortcut." in name)
    assert shortcut_parameters == 2_752
    assert count_modules(model, nn.Conv2d, kernel_size=1) == 2


@pytest.mark.parametrize(("name", "depth"), [("resnet8", 8), ("resnet20", 20), ("resnet32", 32), ("resnet56", 56)])
def test_cifar_resnet_depth_counts_3x3_convolutions_and_the_classifier(name: str, depth: int) -> None:
    model = build_model(name, (1, 28, 28), 10)
    assert count_modules(model, nn.Conv2d, kernel_size=3) + count_modules(model, nn.Linear) == depth
    assert model.classifier.in_features == 64


def test_preresnet29_has_29_weight_layers_besides_its_shortcuts() -> None:
    model = build_model("preresnet29", (3, 32, 32), 10)
    weight_layers = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and not name.endswith("shortcut")
    ]  # fmt: skip
    assert len(weight_layers) == 29
    assert count_modules(model, nn.Conv2d, kernel_size=1) == 18 + 2  # two 1×1 per block + two projections
    assert model.classifier.in_features == 256
    assert model.stages[1][0].conv2.stride == (2, 2)


@pytest.mark.parametrize(("image_size", "expected_inputs"), [(28, 400), (32, 400), (12, 16), (36, 16 * 6 * 6)])
def test_lenet5_flatten_size_follows_the_image_size(image_size: int, expected_inputs: int) -> None:
    model = build_model("lenet5", (1, image_size, image_size), 10)
    first_linear = model.hidden[0]
    assert isinstance(first_linear, nn.Linear)
    assert first_linear.in_features == expected_inputs
    assert model(torch.randn(1, 1, image_size, image_size)).shape == (1, 10)


def test_mlp_widths() -> None:
    widths = [
        (layer.in_features, layer.out_features)
        for layer in build_model("lenet300", (1, 28, 28), 10).modules()
        if isinstance(layer, nn.Linear)
    ]
    assert widths == [(784, 300), (300, 100), (100, 10)]
    lap_widths = [
        layer.out_features
        for layer in build_model("mlp-lap", (1, 28, 28), 10).modules()
        if isinstance(layer, nn.Linear)
    ]
    assert lap_widths == [500, 500, 500, 500, 10]


@pytest.mark.parametrize(
    ("name", "flattened"), [("conv2", 64 * 14 * 14), ("conv4", 128 * 7 * 7), ("conv6", 256 * 3 * 3)]
)
def test_lottery_ticket_convnets_flatten_the_last_map(name: str, flattened: int) -> None:
    model = build_model(name, (1, 28, 28), 10)
    assert model.hidden[0].in_features == flattened
    assert [layer.out_features for layer in model.modules() if isinstance(layer, nn.Linear)] == [256, 256, 10]


def test_small_bn_cnns() -> None:
    bn4 = build_model("cnn-bn4", (1, 28, 28), 10)
    assert bn4.classifier.in_features == 64 * 7 * 7
    assert count_modules(bn4, nn.BatchNorm2d) == count_modules(bn4, nn.Conv2d) == 4
    bn5 = build_model("cnn-bn5", (1, 28, 28), 10)
    assert bn5.classifier.in_features == 128
    assert count_modules(bn5, nn.BatchNorm2d) == count_modules(bn5, nn.Conv2d) == 5


@pytest.mark.parametrize(("name", "convolutions"), [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_layers_and_ceil_mode_pooling(name: str, convolutions: int) -> None:
    model = build_model(name, (1, 28, 28), 10)
    assert count_modules(model, nn.Conv2d, kernel_size=3) == convolutions
    pools = [module for module in model.modules() if isinstance(module, nn.MaxPool2d)]
    assert len(pools) == 5 and all(pool.ceil_mode for pool in pools)
    assert model.features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 1, 1)  # 28 → 14 → 7 → 4 → 2 → 1


def test_resnet50_is_v1_5_with_the_stride_on_the_3x3_convolution() -> None:
    with torch.device("meta"):
        model = build_model("resnet50", (3, 224, 224), 1000)
    first_block = model.stages[1][0]
    assert isinstance(first_block, Bottleneck)
    assert first_block.conv1.stride == (1, 1)
    assert first_block.conv2.stride == (2, 2)
    assert first_block.shortcut[0].stride == (2, 2)
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    assert model.classifier.in_features == 2048


@pytest.mark.parametrize(("name", "image_size", "feature_size"), [("resnet18", 28, 1), ("resnet18", 64, 2)])
def test_imagenet_resnet_downsamples_by_32(name: str, image_size: int, feature_size: int) -> None:
    model = build_model(name, (1, image_size, image_size), 10).eval()
    features = model.stages(model.stem(torch.randn(1, 1, image_size, image_size)))
    assert features.shape == (1, 512, feature_size, feature_size)


@pytest.mark.parametrize(("image_size", "feature_size"), [(32, 4), (63, 8), (64, 2)])
def test_mobilenetv2_keeps_resolution_for_images_below_64(image_size: int, feature_size: int) -> None:
    model = build_model("mobilenetv2", (3, image_size, image_size), 10).eval()
    features = model.features(torch.randn(1, 3, image_size, image_size))
    assert features.shape == (1, 1280, feature_size, feature_size)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2


def test_unknown_model_is_a_usage_error_listing_the_accepted_names() -> None:
    with pytest.raises(UsageError) as raised:
        build_model("resnet-9000", (1, 28, 28), 10)
    message = str(raised.value)
    assert "resnet-9000" in message and "\n" not in message
    assert all(name in message for name in MODELS.names())
    with pytest.raises(UsageError, match="lenet300"):
        model_entry("nope")


def test_too_small_image_is_a_usage_error_naming_the_model_and_the_minimum() -> None:
    with pytest.raises(UsageError) as raised:
        build_model("lenet5", (1, 8, 8), 10)
    message = str(raised.value)
    assert "lenet5" in message and "8×8" in message and ">= 12" in message and "\n" not in message


def test_non_square_image_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'conv4'.*28×32.*H == W >= 4"):
        build_model("conv4", (1, 28, 32), 10)


@pytest.mark.parametrize(("input_shape", "num_classes"), [((0, 28, 28), 10), ((1, 28, 28), 0)])
def test_degenerate_shapes_and_class_counts_are_usage_errors(
    input_shape: tuple[int, int, int], num_classes: int
) -> None:
    with pytest.raises(UsageError, match="'lenet300'"):
        build_model("lenet300", input_shape, num_classes)


def test_model_entry_returns_the_registered_entry() -> None:
    entry = model_entry("resnet20")
    assert isinstance(entry, ModelEntry)
    assert (entry.name, entry.kind, entry.min_image_size) == ("resnet20", "conv", 1)
    assert model_entry("lenet300").kind == "mlp"
    assert model_entry("lenet5").min_image_size == 12


def test_register_model_rejects_bad_kinds_and_taken_names() -> None:
    def factory(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
        return nn.Linear(in_channels * image_size * image_size, num_classes)

    count_before = len(MODELS)
    with pytest.raises(ValueError, match="kind"):
        register_model("test-only-model", kind="transformer", description="x")
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5", kind="conv", description="x")(factory)
    assert len(MODELS) == count_before
    assert "test-only-model" not in MODELS
