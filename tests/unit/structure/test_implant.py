"""Neural implants: forward semantics, counting, training, later surgery, replay and ONNX export."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.errors import RunDirError, StructureError
from secateurs.metrics.counts import count_macs, count_params
from secateurs.models import build_model
from secateurs.structure.groups import channel_graph
from secateurs.structure.implant import ImplantedConv2d
from secateurs.structure.plan import make_plan, plan_of, replace_module, replay_plan
from secateurs.structure.surgery import apply_plan, removal_plan

pytestmark = pytest.mark.usefixtures("one_thread")


def densified(model: nn.Module) -> nn.Module:
    """A copy where every implanted layer is the plain Conv2d with its equivalent dense kernel."""
    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        if isinstance(module, ImplantedConv2d):
            kept = module.kept
            conv = nn.Conv2d(
                kept.in_channels,
                module.out_channels,
                kept.kernel_size,  # type: ignore[arg-type]
                stride=kept.stride,  # type: ignore[arg-type]
                padding=kept.padding,  # type: ignore[arg-type]
                dilation=kept.dilation,  # type: ignore[arg-type]
                bias=kept.bias is not None,
            )
            with torch.no_grad():
                conv.weight.copy_(module.effective_weight())
                if conv.bias is not None:
                    bias = torch.cat([kept.bias, module.implant.bias]).index_select(0, module.order)  # type: ignore[list-item]
                    conv.bias.copy_(bias)
            replace_module(clone, name, conv)
    return clone


@pytest.mark.parametrize(
    ("kernel", "padding", "stride", "dilation"),
    [(3, 1, 1, 1), (3, 1, 2, 1), (5, 0, 1, 1), (3, 2, 1, 1), (3, 2, 2, 2), (1, 0, 2, 1)],
)
def test_implant_equals_a_centre_tap_kernel(kernel: int, padding: int, stride: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel, stride=stride, padding=padding, dilation=dilation, bias=True)
    implanted = ImplantedConv2d.from_conv(conv, [1, 4], name="layer")
    inputs = torch.randn(2, 3, 9, 9)
    # zero-initialised: implanted slots output exactly 0, the others are the original filters
    out = implanted(inputs)
    reference = conv(inputs)
    assert torch.equal(out[:, [1, 4]], torch.zeros_like(out[:, [1, 4]]))
    assert torch.allclose(out[:, [0, 2, 3]], reference[:, [0, 2, 3]], atol=1e-6)
    with torch.no_grad():
        implanted.implant.weight.normal_()
        implanted.implant.bias.normal_()  # type: ignore[union-attr]
    dense = densified(nn.Sequential(implanted))
    assert torch.allclose(implanted(inputs), dense(inputs), atol=1e-5)
    assert implanted.implant.weight.shape == (2, 3, 1, 1)
    assert implanted.implanted_slots() == [1, 4]


def test_centre_initialised_implants_start_from_the_centre_tap() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    implanted = ImplantedConv2d.from_conv(conv, [2], name="layer", init="centre")
    assert torch.equal(implanted.implant.weight[0, :, 0, 0], conv.weight[2, :, 1, 1])
    assert torch.equal(implanted.implant.bias, conv.bias[2:3])  # type: ignore[arg-type]


def test_zero_implants_behind_batch_norm_and_relu_train_only_with_positive_bias() -> None:
    # BN in training mode maps an all-zero channel to its bias β; ReLU passes gradient only if β > 0
    for beta, trains in ((0.5, True), (-0.5, False)):
        torch.manual_seed(0)
        conv = ImplantedConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1, bias=False), [1], name="layer")
        norm = nn.BatchNorm2d(2)
        with torch.no_grad():
            norm.bias.fill_(beta)
        out = torch.relu(norm(conv(torch.randn(4, 2, 5, 5))))
        (out * torch.randn_like(out)).sum().backward()
        assert (float(conv.implant.weight.grad.abs().sum()) > 0) is trains  # type: ignore[union-attr]


def test_layers_without_a_centre_tap_refuse_implants() -> None:
    with pytest.raises(StructureError, match="layer 'odd' cannot take neural implants"):
        ImplantedConv2d.from_conv(nn.Conv2d(2, 4, 2), [0], name="odd")
    with pytest.raises(StructureError, match="layer 'grouped' cannot take neural implants"):
        ImplantedConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, groups=2), [0], name="grouped")
    with pytest.raises(StructureError, match="leave at least one full filter"):
        ImplantedConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1), [0, 1], name="all")


def test_counts_go_through_the_leaves() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    implanted = ImplantedConv2d.from_conv(conv, [0, 2], name="layer")
    assert count_params(implanted) == 4 * 4 * 9 + 2 * 4  # four full 3×3 filters, two 1×1 implants
    assert count_macs(implanted, (4, 5, 5)) == (4 * 4 * 9 + 2 * 4) * 25


def test_implants_train() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(ImplantedConv2d.from_conv(nn.Conv2d(2, 3, 3, padding=1), [1], name="0"), nn.Flatten())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = torch.randn(4, 2, 4, 4), torch.randn(4, 48)
    loss = (model(inputs) - targets).pow(2).mean()
    loss.backward()
    implant = model[0].implant.weight
    assert implant.grad is not None and float(implant.grad.abs().sum()) > 0
    optimizer.step()
    assert float(implant.detach().abs().sum()) > 0
    with torch.no_grad():
        assert float((model(inputs) - targets).pow(2).mean()) < float(loss)


def _hap_with_implants(tmp_path: Path) -> tuple[sec.api.PruneResult, torch.Tensor]:
    torch.manual_seed(2)
    model = build_model("resnet8", (1, 8, 8), 4)
    inputs = torch.randn(24, 1, 8, 8)
    result = sec.prune(
        model,
        "hap",
        0.6,
        example_inputs=inputs[:2],
        data=[(inputs, torch.arange(24) % 4)],
        target="channels",
        probes=4,
        implant_ratio=0.3,
    )
    with torch.no_grad():  # as if fine-tuned: implants are no longer zero
        for module in result.model.modules():
            if isinstance(module, ImplantedConv2d):
                module.implant.weight.normal_(std=0.1)
    result.model.eval()
    return result, inputs


def test_hap_implants_count_replay_and_reload(tmp_path: Path) -> None:
    result, inputs = _hap_with_implants(tmp_path)
    implanted = [m for m in result.model.modules() if isinstance(m, ImplantedConv2d)]
    assert implanted and result.info["implanted_filters"] == sum(m.implant.out_channels for m in implanted)
    assert 0 < result.info["implanted_channels"] <= result.info["implanted_filters"]
    assert result.info["realised"]["channel_ratio"] > result.info["realised"]["channels_removed"]
    assert result.size.params == count_params(result.model) == result.info["params"]
    sec.save(result, tmp_path / "run")
    loaded = sec.load(tmp_path / "run", lambda: build_model("resnet8", (1, 8, 8), 4))
    assert any(isinstance(m, ImplantedConv2d) for m in loaded.model.modules())
    with torch.no_grad():
        assert torch.equal(loaded.model(inputs), result.model(inputs))


def test_implanted_model_survives_later_surgery(tmp_path: Path) -> None:
    result, inputs = _hap_with_implants(tmp_path)
    model = result.model
    graph = channel_graph(model, inputs[:2])
    members = {m.name: g for g in graph.prunable() for m in g.members}
    implanted_name = next(n for n, m in model.named_modules() if isinstance(m, ImplantedConv2d))
    group = members[implanted_name]
    kept = {group.root: torch.arange(group.channels) % 3 != 1}
    second = apply_plan(model, removal_plan(graph.groups, kept, previous=plan_of(model)), inputs[:2]).eval()
    reference_graph = channel_graph(densified(model), inputs[:2])
    reference = apply_plan(densified(model), removal_plan(reference_graph.groups, kept), inputs[:2]).eval()
    with torch.no_grad():
        assert (second(inputs) - reference(inputs)).abs().max() < 1e-5
    # the chained plan (both stages) rebuilds the twice-pruned model from the fresh registry model
    fresh = build_model("resnet8", (1, 8, 8), 4)
    replay_plan(fresh, make_plan(plan_of(second)), inputs[:1])
    sec.sparsity.masks.load_plain_state_dict(fresh, sec.sparsity.masks.plain_state_dict(second))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(inputs), second(inputs))


def test_implanted_model_exports_to_onnx(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    result, inputs = _hap_with_implants(tmp_path)
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            result.model,
            (inputs[:2],),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}},
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(path))
    (outputs,) = session.run(None, {"x": inputs.numpy()})
    with torch.no_grad():
        expected = result.model(inputs).numpy()
    assert np.abs(outputs - expected).max() <= 1e-4


def test_implant_steps_that_do_not_match_the_model_are_named() -> None:
    model = build_model("resnet8", (1, 8, 8), 4)
    bad = {
        "format": "secateurs-plan/1",
        "steps": [{"kind": "implant", "layer": "stem.1", "channels": 16, "implanted": [0]}],
    }
    with pytest.raises(RunDirError, match=r"step 0: layer 'stem.1' is a BatchNorm2d; implants replace an nn.Conv2d"):
        replay_plan(model, bad, torch.zeros(1, 1, 8, 8))
    wrong = {
        "format": "secateurs-plan/1",
        "steps": [{"kind": "implant", "layer": "stem.0", "channels": 8, "implanted": [0]}],
    }
    with pytest.raises(RunDirError, match=r"layer 'stem.0' has 16 output channels, the plan expects 8"):
        replay_plan(model, wrong, torch.zeros(1, 1, 8, 8))


def test_implant_mode_respects_the_cap_on_removed_plus_implanted_channels() -> None:
    torch.manual_seed(3)
    model = build_model("resnet8", (1, 8, 8), 4)
    inputs = torch.randn(16, 1, 8, 8)
    result = sec.prune(
        model,
        "hap",
        0.9,
        example_inputs=inputs[:2],
        data=[(inputs, torch.arange(16) % 4)],
        target="channels",
        probes=3,
        implant_ratio=0.3,
    )
    groups = result.info["groups"]
    assert any(g["removed"] + g["implanted"] == int(0.95 * g["channels"]) for g in groups.values())
    for group in groups.values():
        assert group["removed"] + group["implanted"] <= int(0.95 * group["channels"])
    for module in result.model.modules():
        if isinstance(module, ImplantedConv2d):
            assert module.kept.out_channels >= 1
