"""Per-layer rate protocols (one-shot, global, iterative) and the LAMP baseline, with exact numbers."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import split_validation
from secateurs.errors import ConfigError, UsageError
from secateurs.methods import METHODS, PruneContext
from secateurs.scoring import SCORERS, ScoreContext
from secateurs.scoring.lamp import lamp_layer_scores
from secateurs.sparsity.rates import layer_targets, nominal_sparsity

LAP_MLP_RATES = (0.5, 0.5, 0.5, 0.5, 0.25)


def mlp(widths: tuple[int, ...] = (20, 16, 12, 8, 6, 4), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def prune(model: nn.Module, method: str, **fields: object) -> dict[str, tuple[int, int]]:
    entry = METHODS.get(method)
    config = PruneConfig(method=method, **fields)  # type: ignore[arg-type]
    context = PruneContext(
        example_inputs=torch.zeros(2, 20),
        generator=torch.Generator().manual_seed(0),
        batches=[(torch.randn(8, 20), torch.zeros(8))],
    )
    outcome = entry.apply(model, config, entry.parse_options({}), context)
    assert outcome.masks is not None
    return outcome.masks.counts()


def test_layer_targets_are_one_minus_the_surviving_share_to_the_power_of_the_round() -> None:
    targets = layer_targets(LAP_MLP_RATES, ["a", "b", "c", "d", "e"], 4)
    assert targets == {"a": 0.9375, "b": 0.9375, "c": 0.9375, "d": 0.9375, "e": 1 - 0.75**4}
    sizes = {"a": 392_000, "b": 250_000, "c": 250_000, "d": 250_000, "e": 5_000}
    # the paper's MLP grid: 6.36 % … 0.12 % of the 1,147,000 weights left for rounds 4 … 10
    left = [1 - nominal_sparsity(layer_targets(LAP_MLP_RATES, list(sizes), r), sizes) for r in range(4, 11)]
    assert [round(100 * x, 2) for x in left] == [6.36, 3.21, 1.63, 0.84, 0.43, 0.23, 0.12]


@pytest.mark.parametrize("method", ["magnitude", "random", "lap", "lap-forward", "lap-bn", "lap-act", "lamp"])
def test_realised_layer_sparsity_is_the_rate_protocol_target_rounded(method: str) -> None:
    rates = (0.5, 0.3, 0.2, 0.1, 0.05)
    counts = prune(mlp(), method, rates=rates, rounds=3, scope="layerwise")
    sizes = {"1.weight": 320, "3.weight": 192, "5.weight": 96, "7.weight": 48, "9.weight": 24}
    for (name, size), rate in zip(sizes.items(), rates):
        # keep round((1 − p)^3 · n): 40, 65.856 → 66, 49.152 → 49, 34.992 → 35, 20.577 → 21
        assert counts[name] == (round((1 - rate) ** 3 * size), size)
    assert [counts[n][0] for n in sizes] == [40, 66, 49, 35, 21]


def test_global_scope_prunes_to_the_size_weighted_mean_of_the_layer_targets() -> None:
    counts = prune(mlp(), "lap-global", rates=(0.5, 0.3, 0.2, 0.1, 0.05), rounds=3)
    kept = sum(k for k, _ in counts.values())
    nominal_kept = 0.125 * 320 + 0.343 * 192 + 0.512 * 96 + 0.729 * 48 + 0.857375 * 24
    assert kept == round(nominal_kept) == 211


def test_a_rate_list_of_the_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"rate list has 3 entries but the model has 5 prunable layers \(1.weight"):
        prune(mlp(), "lap", rates=(0.5, 0.5, 0.25))


def test_prune_config_validates_rates() -> None:
    assert PruneConfig(method="lap", rates=LAP_MLP_RATES, rounds=4).sparsity == 0.0
    with pytest.raises(ValueError, match="either sparsity"):
        PruneConfig(method="lap", sparsity=0.9, rates=LAP_MLP_RATES)
    with pytest.raises(ValueError, match="needs a per-layer rate list"):
        PruneConfig(method="lap", sparsity=0.9, rounds=3)
    with pytest.raises(ValueError, match=r"every rate must be in \[0, 1\)"):
        PruneConfig(method="lap", rates=(0.5, 1.0))
    with pytest.raises(ValueError, match="rounds"):
        PruneConfig(method="lap", rates=(0.5,), rounds=0)


def test_lamp_scores_by_hand() -> None:
    weight = torch.tensor([[3.0, -1.0], [2.0, 0.0]])
    # ascending squares 0, 1, 4, 9 (total 14): 0/14, 1/14, 4/13, 9/9
    assert lamp_layer_scores(weight).flatten().tolist() == pytest.approx([1.0, 1 / 14, 4 / 13, 0.0])
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[1].weight.copy_(torch.tensor([[0.1, 0.2]]))
    scores = SCORERS.get("lamp").score(model, ["0.weight", "1.weight"], ScoreContext(generator=torch.Generator()))
    assert scores["1.weight"].flatten().tolist() == pytest.approx([0.01 / 0.05, 1.0])
    # global LAMP keeps 3 of 6: the two layer maxima (1.0) and 4/13; raw global magnitude would keep 3, 2, -1
    counts = prune_two_layers(model)
    assert counts == {"0.weight": (2, 4), "1.weight": (1, 2)}


def prune_two_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    entry = METHODS.get("lamp")
    context = PruneContext(example_inputs=torch.zeros(2, 2), generator=torch.Generator())
    outcome = entry.apply(model, PruneConfig(method="lamp", sparsity=0.5), entry.parse_options({}), context)
    assert outcome.masks is not None
    assert outcome.masks.get("0.weight").tolist() == [[True, False], [True, False]]
    return outcome.masks.counts()


def test_lamp_ties_are_ordered_by_position() -> None:
    assert lamp_layer_scores(torch.tensor([1.0, -1.0])).tolist() == [0.5, 1.0]


def test_iterative_prunes_a_share_of_the_survivors_and_retrains_each_round() -> None:
    splits = split_validation(make_synthetic(num_train=480, num_test=120, image_size=8))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    entry = METHODS.get("iterative")
    context = PruneContext(
        example_inputs=torch.zeros(2, 1, 8, 8),
        generator=torch.Generator().manual_seed(0),
        splits=splits,
        train_config=TrainConfig(epochs=1, batch_size=64, lr=0.05),
        seed=0,
    )
    config = PruneConfig(method="iterative", rates=(0.5, 0.5, 0.25), rounds=2)
    outcome = entry.apply(model, config, entry.parse_options({"prune": "lap"}), context)
    assert outcome.masks is not None
    # round 1 keeps 1024, 256, 120 of 2048, 512, 160; round 2 keeps 512, 128, 90
    assert [round(r["sparsity_prunable"], 6) for r in outcome.history] == [
        round(1 - (1024 + 256 + 120) / 2720, 6),
        round(1 - (512 + 128 + 90) / 2720, 6),
    ]
    assert outcome.masks.counts() == {"1.weight": (512, 2048), "3.weight": (128, 512), "5.weight": (90, 160)}
    assert all("val_accuracy_after_retraining" in r for r in outcome.history)
    assert outcome.train_epochs == 2.0
    for name, mask in outcome.masks.items():
        assert torch.count_nonzero(model.get_submodule(name.rpartition(".")[0]).weight[~mask]) == 0
    with pytest.raises(ConfigError, match="one-shot score-and-select"):
        entry.apply(model, config, entry.parse_options({"prune": "iterative"}), context)


def test_methods_without_rate_support_reject_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(METHODS.get("random")), "supports_rates", False)
    with pytest.raises(ConfigError, match="'random' does not take per-layer rates"):
        METHODS.get("random").check_config(PruneConfig(method="random", rates=(0.5,)))


def test_iterative_reaches_a_plain_sparsity_in_equal_shares_of_the_survivors() -> None:
    splits = split_validation(make_synthetic(num_train=240, num_test=60, image_size=8))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    entry = METHODS.get("iterative")
    context = PruneContext(
        example_inputs=torch.zeros(2, 1, 8, 8),
        generator=torch.Generator().manual_seed(0),
        splits=splits,
        train_config=TrainConfig(epochs=0),
    )
    config = PruneConfig(method="iterative", sparsity=0.75)
    outcome = entry.apply(model, config, entry.parse_options({"prune": "magnitude", "rounds": 2}), context)
    # 1 − (1 − 0.75)^(1/2) = 0.5 of the survivors per round: 50 %, then 75 % of each layer
    assert [r["sparsity_prunable"] for r in outcome.history] == [0.5, 0.75]
    assert outcome.train_epochs == 0.0 and "val_accuracy_after_retraining" not in outcome.history[0]
