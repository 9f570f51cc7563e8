"""LAP neighbours from the real graph: residual sums, skip paths, BN attribution, bad input."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from secateurs.config import PruneConfig
from secateurs.errors import StructureError, UsageError
from secateurs.methods import METHODS, PruneContext
from secateurs.models import build_model
from secateurs.scoring import SCORERS, ScoreContext
from secateurs.scoring.lookahead import column_norms, row_norms
from secateurs.scoring.neighbours import TOPOLOGIES, discover, structure_key, trace_topology
from secateurs.sparsity.masks import MaskStore


def context_for(inputs: torch.Tensor) -> ScoreContext:
    return ScoreContext(generator=torch.Generator().manual_seed(0), example_inputs=inputs)


class TinyResidual(nn.Module):
    """stem → x1; x2 = relu(fc2(relu(fc1(x1))) + x1); x3 = relu(fc4(relu(fc3(x2))) + x2); head(x3)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Linear(3, 4)
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(4, 4) for _ in range(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = torch.relu(self.stem(x))
        x2 = torch.relu(self.fc2(torch.relu(self.fc1(x1))) + x1)
        x3 = torch.relu(self.fc4(torch.relu(self.fc3(x2))) + x2)
        return self.head(x3)


def kinds(paths) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return sorted((path.kind, path.layer) for path in paths)


def test_residual_neighbours_sum_every_producer_and_consumer_and_count_skips_once() -> None:
    model = TinyResidual().double()
    topology = trace_topology(model, torch.zeros(2, 3).double())
    layers = topology.layers
    assert kinds(layers["stem"].following) == [("layer", "fc1"), ("layer", "fc3"), ("skip", None)]
    assert kinds(layers["fc2"].following) == [("layer", "fc3"), ("skip", None)]
    assert kinds(layers["fc3"].previous) == [("layer", "fc2"), ("layer", "stem")]
    assert kinds(layers["fc4"].following) == [("layer", "head")]
    assert kinds(layers["head"].previous) == [("layer", "fc4"), ("skip", None)]
    assert kinds(layers["stem"].previous) == [("boundary", None)]
    assert kinds(layers["head"].following) == [("boundary", None)]
    assert topology.order == ("stem", "fc1", "fc2", "fc3", "fc4", "head")

    names = [f"{n}.weight" for n in ("stem", "fc2", "fc3", "head")]
    scores = SCORERS.get("lap").score(model, names, context_for(torch.zeros(2, 3).double()))
    w = {n: getattr(model, n).weight.detach() for n in ("stem", "fc1", "fc2", "fc3", "fc4", "head")}
    stem_next = column_norms(w["fc1"]) + column_norms(w["fc3"]) + 1
    assert torch.allclose(scores["stem.weight"], w["stem"] ** 2 * stem_next[:, None], rtol=1e-12)
    fc2_next = column_norms(w["fc3"]) + 1
    fc2_expected = w["fc2"] ** 2 * row_norms(w["fc1"])[None, :] * fc2_next[:, None]
    assert torch.allclose(scores["fc2.weight"], fc2_expected, rtol=1e-12)
    fc3_previous = row_norms(w["fc2"]) + row_norms(w["stem"])
    fc3_expected = w["fc3"] ** 2 * fc3_previous[None, :] * column_norms(w["fc4"])[:, None]
    assert torch.allclose(scores["fc3.weight"], fc3_expected, rtol=1e-12)
    head_previous = row_norms(w["fc4"]) + 1
    assert torch.allclose(scores["head.weight"], w["head"] ** 2 * head_previous[None, :], rtol=1e-12)


def test_resnet_bn_factors_follow_their_own_path_not_module_order() -> None:
    """The projection shortcut's BN scales only the shortcut's paths (the released quirk 7 is avoided)."""
    model = build_model("resnet8", (1, 8, 8), 3)
    topology = trace_topology(model, torch.zeros(2, 1, 8, 8))
    block = "stages.1.0"
    assert topology.layers[f"{block}.conv2"].batch_norm == f"{block}.bn2"
    assert topology.layers[f"{block}.shortcut.0"].batch_norm == f"{block}.shortcut.1"
    following = topology.layers[f"{block}.conv2"].following
    assert {bn for path in following for bn in path.batch_norms} == {f"{block}.bn2"}
    consumer = topology.layers["stages.2.0.conv1"].previous
    assert sorted((p.layer, p.batch_norms) for p in consumer) == [
        ("stages.1.0.conv2", ("stages.1.0.bn2",)),
        ("stages.1.0.shortcut.0", ("stages.1.0.shortcut.1",)),
    ]


def test_scoring_leaves_a_masked_model_unchanged_and_uses_masked_neighbours() -> None:
    model = TinyResidual()
    masks = MaskStore.attached(model)
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[:, 0] = False
    masks.set_("fc3.weight", keep)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    scores = SCORERS.get("lap").score(model, ["fc2.weight"], context_for(torch.zeros(2, 3)))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fc3 = model.fc3.weight.detach()
    assert torch.equal(fc3[:, 0], torch.zeros(4))
    expected_next = column_norms(fc3).double() + 1
    expected = model.fc2.weight.detach().double() ** 2 * row_norms(model.fc1.weight).double() * expected_next[:, None]
    assert torch.allclose(scores["fc2.weight"].double(), expected, rtol=1e-6)
    assert float(expected_next[0]) == 1.0  # the pruned column contributes 0, the skip 1


class WithConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(3, 2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.reduce = nn.Linear(4, 2)
        self.expand = nn.Linear(2, 4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(y.mean(dim=(2, 3))))))
        return self.head(y * gate[:, :, None, None]).mean(dim=(2, 3))


def test_unrelatable_paths_raise_on_request_and_otherwise_count_as_identity(caplog: pytest.LogCaptureFixture) -> None:
    model = WithConcat().double()
    inputs = torch.zeros(2, 3).double()
    entry = METHODS.get("lap")
    config = PruneConfig(method="lap", sparsity=0.5)
    context = PruneContext(example_inputs=inputs, generator=torch.Generator())
    with pytest.raises(StructureError, match=r"cannot relate a \(output side\): a concatenation"):
        entry.apply(model, config, entry.parse_options({"on_unrelated": "error"}), context)
    with caplog.at_level(logging.WARNING):
        outcome = entry.apply(model, config, entry.parse_options({}), context)
    assert "unrelatable path" in caplog.text and "reduce to magnitude" not in caplog.text
    assert "a (output side): a concatenation" in outcome.info["lap_unrelated_as_identity"]
    scores = SCORERS.get("lap").score(model, ["a.weight"], context_for(inputs))
    assert torch.equal(scores["a.weight"], model.a.weight.detach() ** 2)  # prev: input (1), next: identity (1)


def test_a_squeeze_excite_gate_is_unrelated_but_its_pooled_branch_is_related() -> None:
    topology = trace_topology(SqueezeExcite(), torch.zeros(2, 1, 5, 5))
    conv = topology.layers["conv"]
    assert ("layer", "reduce") in kinds(conv.following)
    assert any(p.kind == "unrelated" and "mul of 2 tensors" in p.reason for p in conv.following)
    assert kinds(topology.layers["reduce"].previous) == [("layer", "conv")]


def test_a_single_layer_model_reduces_to_magnitude_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    context = context_for(torch.zeros(2, 1, 2, 2))
    with caplog.at_level(logging.WARNING):
        scores = SCORERS.get("lap").score(model, ["1.weight"], context)
    assert "reduce to magnitude" in caplog.text and context.info["lap_no_neighbours"] is True
    assert torch.equal(scores["1.weight"], model[1].weight.detach() ** 2)


def test_bad_input_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UsageError, match="pass example_inputs"):
        SCORERS.get("lap").score(model, ["0.weight"], ScoreContext(generator=torch.Generator()))
    with pytest.raises(StructureError, match=r"not '0\.bias'"):
        SCORERS.get("lap").score(model, ["0.bias"], context_for(torch.zeros(2, 3)))
    with pytest.raises(StructureError, match="cannot trace"):
        SCORERS.get("lap").score(model, ["0.weight"], context_for(torch.zeros(2, 5)))


def test_a_layer_outside_the_forward_pass_is_reported() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.spare = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    entry = METHODS.get("lap")
    context = PruneContext(example_inputs=torch.zeros(2, 3), generator=torch.Generator())
    with pytest.raises(StructureError, match=r"spare .*not used in the forward pass"):
        entry.apply(
            Unused(), PruneConfig(method="lap", sparsity=0.5), entry.parse_options({"on_unrelated": "error"}), context
        )


def test_the_traced_structure_is_memoised_per_model_structure() -> None:
    TOPOLOGIES.clear()
    inputs = torch.zeros(2, 1, 8, 8)
    first = discover(build_model("cnn-bn4", (1, 8, 8), 10), inputs)
    masked = build_model("cnn-bn4", (1, 8, 8), 10)
    MaskStore.attached(masked).set_("classifier.weight", torch.ones_like(masked.classifier.weight, dtype=torch.bool))
    assert structure_key(masked, inputs) == structure_key(build_model("cnn-bn4", (1, 8, 8), 10), inputs)
    assert discover(masked, inputs) is first
    assert discover(build_model("cnn-bn4", (1, 12, 12), 10), torch.zeros(2, 1, 12, 12)) is not first
