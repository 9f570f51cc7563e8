"""Channel groups from Torch-Pruning's graph: coupling, frozen output, ties, slices, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.models import build_model
from secateurs.structure.channel_view import layouts, member_slices
from secateurs.structure.groups import channel_graph

pytestmark = pytest.mark.usefixtures("one_thread")


class ConvBnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.classifier = nn.Linear(2 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 2), 1))


def _groups_by_root(model: nn.Module, shape: tuple[int, ...]) -> dict[str, object]:
    graph = channel_graph(model, torch.zeros(2, *shape))
    return {g.root: g for g in graph.groups}


def test_conv_bn_coupling_roles_and_flatten_mapping() -> None:
    groups = _groups_by_root(ConvBnNet(), (1, 4, 4))
    first = groups["conv1"]
    roles = {(m.name, m.role) for m in first.members}
    assert roles == {("conv1", "out"), ("bn1", "out"), ("conv2", "in")}
    second = groups["conv2"]
    linear = next(m for m in second.members if m.name == "classifier")
    assert linear.role == "in"
    # flatten: feature f of the linear layer belongs to channel f // (2·2)
    assert torch.equal(linear.channels, linear.indices // 4)
    assert groups["classifier"].frozen is not None and "output" in groups["classifier"].frozen
    assert first.prunable and second.prunable


def test_member_slices_are_hand_computable() -> None:
    model = ConvBnNet()
    with torch.no_grad():
        model.conv1.weight.copy_(torch.arange(27.0).reshape(3, 1, 3, 3))
        model.conv2.weight.copy_(torch.arange(54.0).reshape(2, 3, 3, 3))
    group = _groups_by_root(model, (1, 4, 4))["conv1"]
    slices = {m.name: rows for m, rows in member_slices(group, layouts([group]), roles=("out", "in"))}
    # out-filter c of conv1: its 9 weights; in-slice c of conv2: both filters' kernels over input c
    assert torch.equal(slices["conv1"][1], torch.arange(9.0, 18.0))
    expected = torch.cat([model.conv2.weight[0, 2].reshape(-1), model.conv2.weight[1, 2].reshape(-1)])
    assert torch.equal(slices["conv2"][2], expected.detach())


def test_residual_stages_couple_every_writer_of_the_stream() -> None:
    groups = _groups_by_root(build_model("resnet8", (1, 12, 12), 10), (1, 12, 12))
    stream = next(g for g in groups.values() if any(m.name == "stem.0" for m in g.out_filters()))
    writers = {m.name for m in stream.out_filters()}
    assert writers == {"stem.0", "stages.0.0.conv2"}
    readers = {m.name for m in stream.members if m.role == "in"}
    assert {"stages.0.0.conv1", "stages.1.0.conv1", "stages.1.0.shortcut.0"} <= readers


def test_depthwise_convolutions_join_their_producer_group() -> None:
    groups = _groups_by_root(build_model("mobilenetv2", (1, 8, 8), 10), (1, 8, 8))
    expand = next(g for g in groups.values() if any(m.name == "features.2.layers.0" for m in g.out_filters()))
    writers = {m.name for m in expand.out_filters()}
    assert writers == {"features.2.layers.0", "features.2.layers.3"}  # the 1×1 expand and the depthwise 3×3
    assert expand.unit_count == expand.channels


class GroupedNet(nn.Module):
    """conv → BN → grouped conv (4 groups): the producer's channels are tied by position."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(torch.relu(self.bn(self.conv(x))))
        return self.classifier(x.mean((2, 3)))


def test_grouped_convolution_ties_channels_by_position() -> None:
    groups = _groups_by_root(GroupedNet(), (1, 6, 6))
    producer = groups["conv"]
    # 8 inputs in 4 groups of 2: position p ties channels {p, 2 + p, 4 + p, 6 + p}
    assert producer.units.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert producer.unit_sizes().tolist() == [4, 4]
    assert groups["grouped"].units.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]


class ConcatIntoGrouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(torch.cat([self.a(x), self.b(x)], 1))
        return self.classifier(x.mean((2, 3)))


def test_grouped_convolution_fed_by_a_concat_freezes_its_producers() -> None:
    groups = _groups_by_root(ConcatIntoGrouped(), (1, 6, 6))
    assert "grouped convolution 'grouped'" in str(groups["a"].frozen)
    assert "grouped convolution 'grouped'" in str(groups["b"].frozen)
    assert groups["grouped"].prunable


def test_exclude_freezes_a_group_and_unknown_pattern_is_an_error() -> None:
    graph = channel_graph(ConvBnNet(), torch.zeros(2, 1, 4, 4), exclude=("conv2",))
    frozen = graph.frozen()
    assert "conv2" in frozen and "excluded" in frozen["conv2"]
    with pytest.raises(StructureError, match="matches no layer"):
        channel_graph(ConvBnNet(), torch.zeros(2, 1, 4, 4), exclude=("nope*",))


class NoAutograd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(self.conv(x).mean((2, 3)))


class ReturnsText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> str:
        return "logits"


def test_models_torch_pruning_cannot_trace_are_a_structure_error() -> None:
    with pytest.raises(StructureError, match="cannot trace NoAutograd: the model output carries no autograd history"):
        channel_graph(NoAutograd(), torch.zeros(2, 1, 6, 6))
    with pytest.raises(StructureError, match="cannot trace ReturnsText: the model returns str"):
        channel_graph(ReturnsText(), torch.zeros(2, 1, 6, 6))


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.norm = nn.LayerNorm(5)
        self.classifier = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(self.fc1(x.flatten(1))))


def test_a_coupled_layer_without_handler_is_named() -> None:
    with pytest.raises(StructureError, match=r"layer 'norm' \(LayerNorm\).*no channel handler; accepted"):
        channel_graph(WithLayerNorm(), torch.zeros(2, 1, 2, 3))


def test_removing_every_channel_of_a_layer_is_refused_before_any_change() -> None:
    from secateurs.structure.surgery import removal_plan

    model = ConvBnNet()
    graph = channel_graph(model, torch.zeros(2, 1, 4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StructureError, match="removing all 3 channels of 'conv1' would empty the layer"):
        removal_plan(graph.groups, {"conv1": torch.zeros(3, dtype=torch.bool)})
    with pytest.raises(
        StructureError, match="group 'classifier' may not be pruned: its channels reach the model output"
    ):
        removal_plan(graph.groups, {"classifier": torch.tensor([False, True, True, True])})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
