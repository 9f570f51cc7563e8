"""LAP scores against exact distortions and hand-computed numbers (METHODS.md §1.1, §1.2, E-LAP-2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from secateurs.config import PruneConfig
from secateurs.methods import METHODS, PruneContext
from secateurs.scoring import SCORERS, ScoreContext
from secateurs.scoring.lookahead import column_norms, layer_scores, row_norms


def context_for(model: nn.Module, inputs: torch.Tensor, batches: list | None = None) -> ScoreContext:
    return ScoreContext(generator=torch.Generator().manual_seed(0), example_inputs=inputs, batches=batches or [])


def set_weights_(model: nn.Module, values: dict[str, list]) -> None:
    with torch.no_grad():
        for name, value in values.items():
            parameter = model.get_parameter(name)
            parameter.copy_(torch.tensor(value, dtype=parameter.dtype).reshape(parameter.shape))


def three_layer_mlp() -> nn.Sequential:
    """2 → 3 → 2 → 2 with the integer weights used by the hand computations below."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    set_weights_(
        model,
        {
            "0.weight": [[1, 2], [0, 1], [3, 0]],  # row norms² [5, 1, 9]; column norms² [10, 5]
            "2.weight": [[1, -1, 2], [0, 3, 1]],  # row norms² [6, 10]; column norms² [1, 10, 5]
            "4.weight": [[2, 0], [1, 1]],  # column norms² [5, 1]
        },
    )
    return model


def test_lap_score_is_the_exact_frobenius_change_of_the_three_layer_product() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4)).double()
    scores = SCORERS.get("lap").score(model, ["2.weight"], context_for(model, torch.randn(2, 7).double()))
    first, middle, last = (model[i].weight.detach() for i in (0, 2, 4))
    product = last @ middle @ first
    for j in range(middle.shape[0]):
        for k in range(middle.shape[1]):
            removed = middle.clone()
            removed[j, k] = 0
            distortion = torch.linalg.matrix_norm(product - last @ removed @ first)
            assert abs(float(distortion) - math.sqrt(float(scores["2.weight"][j, k]))) < 1e-10


def test_lap_keeps_the_three_layer_product_better_than_magnitude_with_uneven_neighbours() -> None:
    """E-LAP-2: 50 trials, 100×100, log-normal (σ = 1) row scales before and column scales after."""
    generator = torch.Generator().manual_seed(0)

    def relative_distortion(first, middle, last, scores):  # type: ignore[no-untyped-def]
        keep = torch.zeros(middle.numel(), dtype=torch.bool)
        keep[torch.topk(scores.reshape(-1), round(0.05 * middle.numel())).indices] = True
        pruned = middle * keep.view(middle.shape)
        product = last @ middle @ first
        return float(torch.linalg.matrix_norm(product - last @ pruned @ first) / torch.linalg.matrix_norm(product))

    lap, magnitude = [], []
    for _ in range(50):
        first, middle, last = (torch.randn(100, 100, generator=generator, dtype=torch.float64) for _ in range(3))
        first = torch.exp(torch.randn(100, generator=generator, dtype=torch.float64))[:, None] * first
        last = last * torch.exp(torch.randn(100, generator=generator, dtype=torch.float64))[None, :]
        lap_scores = layer_scores(middle, row_norms(first), column_norms(last))
        lap.append(relative_distortion(first, middle, last, lap_scores))
        magnitude.append(relative_distortion(first, middle, last, middle.abs()))
    assert sum(lap) / 50 == pytest.approx(0.30, abs=0.02)
    assert sum(magnitude) / 50 == pytest.approx(0.84, abs=0.02)


def test_hand_computed_scores_on_a_three_layer_mlp() -> None:
    model = three_layer_mlp()
    names = ["0.weight", "2.weight", "4.weight"]
    scores = SCORERS.get("lap").score(model, names, context_for(model, torch.zeros(2, 2).double()))
    # first layer: w² · column norms² of layer 2 ([1, 10, 5]); prev factor 1
    assert scores["0.weight"].tolist() == [[1, 4], [0, 10], [45, 0]]
    # middle: w² · row norms² of layer 1 ([5, 1, 9], per input k) · column norms² of layer 3 ([5, 1], per output j)
    assert scores["2.weight"].tolist() == [[25, 5, 180], [0, 9, 9]]
    # last layer: w² · row norms² of layer 2 ([6, 10]); next factor 1
    assert scores["4.weight"].tolist() == [[24, 0], [6, 10]]


class ConvFlattenLinear(nn.Module):
    """Conv2d(1 → 2, 1×1) on 2×2 images → ReLU → flatten (8 features) → Linear(8 → 3)."""

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(2) if batch_norm else nn.Identity()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, 1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.arange(3).view(3, 1) + torch.arange(8).view(1, 8))  # W[i, f] = i + f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.norm(self.conv(x))), 1))


def test_hand_computed_scores_on_conv_flatten_linear() -> None:
    model = ConvFlattenLinear()
    scores = SCORERS.get("lap").score(model, ["conv.weight", "fc.weight"], context_for(model, torch.zeros(2, 1, 2, 2)))
    # column f of the Linear: Σ_i (i + f)² = 3f² + 6f + 5; channel 0 = features 0-3, channel 1 = 4-7
    # channel 0: 5 + 14 + 29 + 50 = 98; channel 1: 77 + 110 + 149 + 194 = 530
    assert scores["conv.weight"].flatten().tolist() == [4 * 98, 1 * 530]
    # feature f reads channel ⌊f / 4⌋, whose filter norm² is 4 (channel 0) or 1 (channel 1)
    assert float(scores["fc.weight"][1, 2]) == 3**2 * 4
    assert float(scores["fc.weight"][2, 6]) == 8**2 * 1
    expected = (torch.arange(3).view(3, 1) + torch.arange(8).view(1, 8)).double() ** 2
    expected = expected * torch.tensor([4.0] * 4 + [1.0] * 4).view(1, 8)
    assert torch.equal(scores["fc.weight"].double(), expected)


def conv_bn_conv() -> nn.Sequential:
    """Conv(1 → 2) → BN → ReLU → Conv(2 → 1), all 1×1; BN s = γ/√(var + eps) = [1, 1/3]."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2, eps=1.0), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([2.0, 3.0]).view(2, 1, 1, 1))  # row norms² [4, 9]
        model[1].weight.copy_(torch.tensor([2.0, 1.0]))
        model[1].running_var.copy_(torch.tensor([3.0, 8.0]))  # √(var + 1) = [2, 3]
        model[3].weight.copy_(torch.tensor([5.0, 6.0]).view(1, 2, 1, 1))  # column norms² [25, 36]
    return model.eval()


def test_hand_computed_scores_on_a_conv_bn_net() -> None:
    model = conv_bn_conv()
    names = ["0.weight", "3.weight"]
    context = context_for(model, torch.zeros(2, 1, 3, 3))
    plain = SCORERS.get("lap").score(model, names, context)
    with_bn = SCORERS.get("lap-bn").score(model, names, context)
    assert plain["0.weight"].flatten().tolist() == [4 * 25, 9 * 36]
    assert plain["3.weight"].flatten().tolist() == [25 * 4, 36 * 9]
    # LAP-BN: s² = [1, 1/9] scales the next factor of conv 0 and the prev factor of conv 3
    assert with_bn["0.weight"].flatten().tolist() == pytest.approx([4 * 1 * 25, 9 * (1 / 9) * 36])
    assert with_bn["3.weight"].flatten().tolist() == pytest.approx([25 * 1 * 4, 36 * (1 / 9) * 9])
    assert not model.training


def test_lap_bn_maps_bn_channels_through_a_flatten() -> None:
    """The BN before a flatten scales feature f by s[⌊f / HW⌋] (the released code's quirk 8 divisor)."""
    model = ConvFlattenLinear(batch_norm=True).eval()
    with torch.no_grad():
        model.norm.weight.copy_(torch.tensor([2.0, 1.0]))
        model.norm.running_var.copy_(torch.tensor([3.0, 8.0]))
        model.norm.eps = 1.0
    scores = SCORERS.get("lap-bn").score(model, ["fc.weight"], context_for(model, torch.zeros(2, 1, 2, 2)))
    factor = torch.tensor([4.0 * 1] * 4 + [1.0 / 9] * 4, dtype=torch.float64).view(1, 8)
    expected = (torch.arange(3).view(3, 1) + torch.arange(8).view(1, 8)).double() ** 2 * factor
    assert torch.allclose(scores["fc.weight"].double(), expected, rtol=1e-6)  # the model is float32


def test_grouped_conv_reads_each_input_channel_within_its_group() -> None:
    weight = torch.arange(1.0, 9.0).view(4, 1, 2, 1)  # 4 outputs, 2 groups, 1 input channel per group, 2 taps
    # outputs 0-1 read input channel 0, outputs 2-3 read input channel 1
    norms = column_norms(weight, groups=2)
    assert norms.tolist() == [1 + 4 + 9 + 16, 25 + 36 + 49 + 64]
    scores = layer_scores(weight, previous=torch.tensor([10.0, 100.0]), following=torch.ones(4), groups=2)
    assert scores[:, 0, 0, 0].tolist() == [1 * 10, 9 * 10, 25 * 100, 49 * 100]


def test_lap_act_scales_rows_by_the_square_root_of_the_activation_probability() -> None:
    model = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False)).double()
    set_weights_(model, {"0.weight": [[1], [-1]], "2.weight": [[2, 3]]})
    inputs = torch.tensor([[1.0], [2.0], [0.5], [-1.0]]).double()  # unit 0 active 3/4, unit 1 active 1/4
    context = context_for(model, inputs[:2], batches=[(inputs, torch.zeros(4, dtype=torch.long))])
    scores = SCORERS.get("lap-act").score(model, ["0.weight", "2.weight"], context)
    # scaled first layer: rows × [√.75, √.25]; first layer scores = scaled w² · column norms² of layer 2
    assert scores["0.weight"].flatten().tolist() == pytest.approx([0.75 * 4, 0.25 * 9])
    # last layer: w² · row norms² of the scaled first layer ([.75, .25])
    assert scores["2.weight"].flatten().tolist() == pytest.approx([4 * 0.75, 9 * 0.25])
    assert context.info["lap_act_mean_probability"]["0"] == pytest.approx(0.5)


def test_lap_act_sums_the_root_probability_over_spatial_positions_for_convs() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 1, bias=False))
    set_weights_(model, {"0.weight": [[[[1.0]]]], "2.weight": [[[[1.0]]]]})
    # position 0 is positive in 1 of 4 images, position 1 in all of them: multiplier √.25 + √1 = 1.5
    images = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [-1.0, 3.0], [-2.0, 1.0]]).view(4, 1, 1, 2)
    context = context_for(model, images[:2], batches=[(images, torch.zeros(4, dtype=torch.long))])
    scores = SCORERS.get("lap-act").score(model, ["0.weight", "2.weight"], context)
    assert float(scores["0.weight"]) == pytest.approx(1.5**2)
    assert float(scores["2.weight"]) == pytest.approx(1.5**2)


def prune_mlp(method: str) -> dict[str, list]:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    set_weights_(
        model,
        {"0.weight": [[-2, -2], [3, 3], [-1, -3]], "2.weight": [[3, -3, 2], [1, -2, 1]], "4.weight": [[-1, 2], [1, 3]]},
    )
    context = PruneContext(example_inputs=torch.zeros(2, 2).double(), generator=torch.Generator())
    entry = METHODS.get(method)
    outcome = entry.apply(model, PruneConfig(method=method, sparsity=0.5), entry.parse_options({}), context)
    assert outcome.masks is not None
    return {name: mask.int().tolist() for name, mask in outcome.masks.items()}


def test_lap_forward_and_backward_use_the_already_pruned_neighbour() -> None:
    """Keeping 3, 3 and 2 weights. Row norms² of layer 1: [8, 18, 10]; column norms² of layer 3: [2, 13]."""
    joint = prune_mlp("lap")
    # layer 2 scores from the dense neighbours: [[144, 324, 80], [104, 936, 130]] → keep 936, 324, 144
    assert joint["2.weight"] == [[1, 1, 0], [0, 1, 0]]
    # layer 1 scores w² · [10, 13, 5] = [[40, 40], [117, 117], [5, 45]] → keep 117, 117, 45
    assert joint["0.weight"] == [[0, 0], [1, 1], [0, 1]]
    forward = prune_mlp("lap-forward")
    # layer 1 pruned first: its row norms² become [0, 18, 9], so layer 2 scores [[0, 324, 72], [0, 936, 117]]
    assert forward["0.weight"] == joint["0.weight"]
    assert forward["2.weight"] == [[0, 1, 0], [0, 1, 1]]
    backward = prune_mlp("lap-backward")
    # layer 3 scores w² · [22, 6] = [[22, 24], [22, 54]] → keep 54, 24: column norms² become [0, 13],
    # so layer 2 scores [[0, 0, 0], [104, 936, 130]] and keeps its whole second row
    assert backward["4.weight"] == [[0, 1], [0, 1]]
    assert backward["2.weight"] == [[0, 0, 0], [1, 1, 1]]
    assert backward["0.weight"] == [[0, 0], [1, 1], [0, 1]]
