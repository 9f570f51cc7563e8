"""Every registered layer handler: its rows are the entries that carry a channel, its size rule is the
physically pruned layer's size, and masks built from its rows equal physical pruning.

Parametrized over `LAYER_HANDLERS`: each registered type needs an example network below (a test fails
when one is missing). ``ScaledConv`` is a layer type secateurs has never seen, registered here through
the public `register_layer_handler` exactly as a user would: it is pruned correctly with no change to
secateurs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn
from torch.nn import functional

from secateurs.layers import LAYER_HANDLERS, ChannelChange, LayerHandler, LayerSize, Role, register_layer_handler
from secateurs.layers.base import handler_for, leaf_weights
from secateurs.metrics.counts import count_macs, count_params
from secateurs.structure.channel_view import composed
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import ChannelGraph, Member, channel_graph
from secateurs.structure.implant import ImplantedConv2d
from secateurs.structure.plan import replay_plan
from secateurs.structure.surgery import apply_plan, keep_masks, masked_copy, removal_plan

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- a user's own layer type
class ScaledConv(nn.Module):
    """A 3×3 convolution with its own parameters: not an ``nn.Conv2d``, unknown to Torch-Pruning."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(out_channels) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(x, self.weight, self.bias, padding=1)


@register_layer_handler(ScaledConv)
class ScaledConvHandler(LayerHandler[ScaledConv]):
    native = False

    def channels(self, module: ScaledConv, role: Role) -> int:
        return int(module.weight.shape[0 if role == "out" else 1])

    def rows(self, module: ScaledConv, tensor: torch.Tensor, indices: torch.Tensor, role: Role) -> torch.Tensor:
        if role == "out":
            return tensor.index_select(0, indices).reshape(len(indices), -1)
        return tensor.index_select(1, indices).transpose(0, 1).reshape(len(indices), -1)

    def size(self, module: ScaledConv, change: ChannelChange) -> LayerSize:
        kept_out = int(change.out_kept.sum())
        weight = kept_out * change.in_kept * 9
        return LayerSize(weight + kept_out, weight)

    def remove_channels(self, module: ScaledConv, indices: Sequence[int], role: Role) -> None:
        keep = torch.tensor([i for i in range(self.channels(module, role)) if i not in set(indices)])
        if role == "out":
            module.weight = nn.Parameter(module.weight.detach()[keep].clone())
            module.bias = nn.Parameter(module.bias.detach()[keep].clone())
        else:
            module.weight = nn.Parameter(module.weight.detach()[:, keep].clone())


# ------------------------------------------------------------------------------------ example networks
class PlainNet(nn.Module):
    """conv → BN → conv → BN → flatten → linear → BN1d → linear: plain conv, linear, both batch norms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc1 = nn.Linear(5 * 2 * 2, 7)
        self.bn3 = nn.BatchNorm1d(7)
        self.classifier = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(functional.adaptive_avg_pool2d(x, 2), 1)
        return self.classifier(torch.relu(self.bn3(self.fc1(x))))


class GroupedNet(nn.Module):
    """conv → grouped conv (4 groups) → depthwise conv → 1×1 conv → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn3 = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 6, 1)
        self.classifier = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(self.bn2(self.grouped(x)))
        x = torch.relu(self.bn3(self.depthwise(x)))
        return self.classifier(self.pointwise(x).mean((2, 3)))


class ImplantNet(nn.Module):
    """conv → an implanted conv (slots 1 and 3 are 1×1 implants, non-zero) → conv → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.middle = ImplantedConv2d.from_conv(nn.Conv2d(6, 8, 3, padding=1), [1, 3], name="middle")
        with torch.no_grad():
            self.middle.implant.weight.normal_()
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 5, 3, padding=1)
        self.classifier = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.middle(x)))
        return self.classifier(self.conv3(x).mean((2, 3)))


class ScaledNet(nn.Module):
    """conv → the user's ScaledConv → BN → conv → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.custom = ScaledConv(6, 8)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 5, 3, padding=1)
        self.classifier = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.custom(x)))
        return self.classifier(self.conv3(x).mean((2, 3)))


EXAMPLES: dict[type[nn.Module], list[Callable[[], nn.Module]]] = {
    nn.Conv2d: [PlainNet, GroupedNet],
    nn.Linear: [PlainNet],
    nn.modules.batchnorm._BatchNorm: [PlainNet, GroupedNet],
    ImplantedConv2d: [ImplantNet],
    ScaledConv: [ScaledNet],
}
"""Example networks per registered layer type: each holds such a layer in a prunable group."""

SHAPE = (1, 6, 6)
CASES = [(kind, factory) for kind in LAYER_HANDLERS.types() if kind in EXAMPLES for factory in EXAMPLES[kind]]
IDS = [f"{kind.__name__}-{factory.__name__}" for kind, factory in CASES]


def test_every_handler_of_secateurs_and_of_this_file_has_an_example() -> None:
    ours = [kind for kind in LAYER_HANDLERS.types() if kind.__module__.startswith(("secateurs", "torch", __name__))]
    assert {nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, ImplantedConv2d, ScaledConv} <= set(ours)
    assert [kind for kind in ours if kind not in EXAMPLES] == []


def test_lookup_follows_the_mro() -> None:
    class TimmLinear(nn.Linear):  # timm's Linear, LayerNorm2d, … subclass torch's layers
        pass

    class MyScaledConv(ScaledConv):
        pass

    assert handler_for(TimmLinear(2, 3)) is handler_for(nn.Linear(2, 3))
    assert isinstance(handler_for(MyScaledConv(2, 3)), ScaledConvHandler)
    assert isinstance(handler_for(nn.BatchNorm1d(3)), type(handler_for(nn.BatchNorm2d(3))))
    assert handler_for(nn.LayerNorm(3)) is None
    with pytest.raises(ValueError, match="layer handler for ScaledConv is already registered"):
        register_layer_handler(ScaledConv)(ScaledConvHandler)


def example(factory: Callable[[], nn.Module]) -> nn.Module:
    """The network in eval mode with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = factory()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def members_of(graph: ChannelGraph, kind: type[nn.Module]) -> list[tuple[str, Member]]:
    return [(g.root, member) for g in graph.groups for member in g.members if isinstance(member.module, kind)]


def recorded_inputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's input during one forward pass, by layer name (only its shape is used)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args[0].detach()))
        for name, module in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize(("kind", "factory"), CASES, ids=IDS)
def test_rows_are_exactly_the_entries_that_carry_each_channel(
    kind: type[nn.Module], factory: Callable[[], nn.Module]
) -> None:
    """Row c of role ``out`` = the weight entries output channel c depends on; of role ``in`` = those that
    read input channel c (found by autograd on the layer alone, compared as positions in the layout)."""
    model = example(factory)
    inputs = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    graph = channel_graph(model, inputs[:2])
    seen = recorded_inputs(model, inputs)
    generator = torch.Generator().manual_seed(5)
    members = members_of(graph, kind)
    assert members, f"{factory.__name__} holds no {kind.__name__} in a channel group"
    for _, member in members:
        module, handler = member.module, member.handler
        leaves = leaf_weights(module)
        layout = handler.layout(module).detach()
        codes = torch.arange(layout.numel()).reshape(layout.shape)
        filled = composed(module, [torch.ones_like(w) for w in leaves]) != 0
        positions = handler.rows(module, codes, member.indices, member.role)
        assert torch.equal(handler.rows(module, layout, member.indices, member.role), layout.reshape(-1)[positions])
        for row, index in enumerate(member.indices.tolist()):
            source = torch.randn(seen[member.name].shape, generator=generator)  # no zeros (a ReLU's would hide entries)
            if member.role == "in":
                only = torch.zeros_like(source)
                only[:, index] = source[:, index]
                source = only
            output = module(source)
            target = output[:, index].sum() if member.role == "out" else output.sum()
            gradients = torch.autograd.grad(target, leaves, allow_unused=True)
            pieces = [torch.zeros_like(w) if g is None else g for w, g in zip(leaves, gradients, strict=True)]
            touched = set(torch.nonzero(composed(module, pieces).reshape(-1) != 0).reshape(-1).tolist())
            expected = {int(p) for p in positions[row] if bool(filled.reshape(-1)[p])}
            assert touched == expected, (member.name, member.role, index)


@pytest.mark.parametrize(("kind", "factory"), CASES, ids=IDS)
def test_size_rule_masks_and_replay_match_the_physically_pruned_model(
    kind: type[nn.Module], factory: Callable[[], nn.Module]
) -> None:
    model = example(factory)
    inputs = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    graph = channel_graph(model, inputs[:2])
    generator = torch.Generator().manual_seed(3)
    kept = {}
    for group in graph.prunable():
        units = torch.rand(group.unit_count, generator=generator) >= 0.4
        units[0] = True
        kept[group.root] = group.channels_of_units(units)
    assert any(not bool(mask.all()) for mask in kept.values())
    plan = removal_plan(graph.groups, kept)
    pruned = apply_plan(model, plan, inputs[:2]).eval()

    sizes = SizeModel(graph, SHAPE)
    for name, size in sizes.layer_sizes(kept, {}).items():  # the size rule, layer by layer
        assert size.params == count_params(pruned.get_submodule(name)), name
    predicted = sizes.size(kept, {})
    assert predicted.params == count_params(pruned) < count_params(model)
    assert predicted.macs == count_macs(pruned, SHAPE) < count_macs(model, SHAPE)

    masked = masked_copy(model, keep_masks(graph.groups, kept)).eval()
    with torch.no_grad():
        assert (masked(inputs) - pruned(inputs)).abs().max().item() <= 1e-5

    fresh = factory()
    replay_plan(fresh, plan, inputs[:1])
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}


def test_a_users_layer_is_pruned_by_a_structured_method_end_to_end() -> None:
    import secateurs as sec

    model = example(ScaledNet)
    inputs = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(4))
    result = sec.prune(model, "l2-filter", 0.4, example_inputs=inputs[:2])  # layer-wise: every group loses some
    custom = result.model.get_submodule("custom")
    assert isinstance(custom, ScaledConv) and tuple(custom.weight.shape[:2]) == (6, 4)  # ⌊r·C⌋: 2 of 8, 2 of 6
    removed = 1 - count_params(result.model) / count_params(model)
    assert result.info["realised"]["params_removed"] == pytest.approx(removed)
    assert abs(result.info["realised"]["params_removed"] - 0.4) < 0.05
    assert count_macs(result.model, SHAPE) == result.info["macs"]
