"""The iterative engine (imp, infcop-if, infcop-gf) on a small MLP and synthetic data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.allocation.rounds import fixed_fraction_masks
from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Splits, split_validation
from secateurs.errors import ConfigError, UsageError
from secateurs.methods import METHODS, PruneContext, PruneOutcome
from secateurs.methods.iterative_options import IterativeOptions, cumulative_keep, resolve_rate
from secateurs.methods.iterative_run import IterativeRun
from secateurs.sparsity.granularity import granularity
from secateurs.sparsity.masks import plain_state_dict
from secateurs.sparsity.pq_index import sap_fraction
from secateurs.sparsity.schedules import geometric_sparsity

BUDGET = TrainConfig(epochs=1.0, batch_size=100, lr=0.02, schedule="constant")


@pytest.fixture(scope="module")
def splits() -> Splits:
    # 1100 training images → 1009 train (10 steps of 100 per epoch) and 91 validation images.
    return split_validation(make_synthetic(num_train=1100, num_test=100))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 10)
    )


def run(
    method: str,
    splits: Splits,
    sparsity: float = 0.0,
    model: nn.Module | None = None,
    budget: TrainConfig = BUDGET,
    checkpoint_dir: Path | None = None,
    **options: Any,
) -> PruneOutcome:
    entry = METHODS.get(method)
    config = PruneConfig(method=method, sparsity=sparsity, options=options)
    context = PruneContext(
        example_inputs=splits.val.x[:2].float(),
        generator=torch.Generator().manual_seed(0),
        splits=splits,
        train_config=budget,
        seed=0,
        checkpoint_dir=checkpoint_dir,
    )
    return entry.apply(model if model is not None else mlp(), config, entry.parse_options(options), context)


def test_per_round_rate_reaches_the_final_sparsity_after_r_rounds() -> None:
    options = IterativeOptions(rounds=5)
    rate = resolve_rate(options, 0.9)
    assert rate == pytest.approx(1 - 0.1 ** (1 / 5))
    assert geometric_sparsity(rate, 5) == pytest.approx(0.9)
    assert [1 - cumulative_keep(rate, t, 5, 0.9) for t in (1, 5)] == [pytest.approx(rate), 0.9]
    assert resolve_rate(options, 0.0) == 0.2  # lottery-ticket default
    assert resolve_rate(IterativeOptions(rounds=2, rate=0.5), 0.75) == 0.5
    with pytest.raises(UsageError, match="give either the rate"):
        resolve_rate(IterativeOptions(rounds=2, rate=0.5), 0.8)


def test_imp_prunes_layerwise_to_the_target_and_pruned_weights_stay_zero(
    splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    after_round: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
    original = IterativeRun._round

    def spy(self: IterativeRun, index: int) -> bool:
        result = original(self, index)
        after_round.append(
            {n: (self.masks.get(n).clone(), self.masks.original(n).detach().clone()) for n in self.plan.names}
        )
        return result

    monkeypatch.setattr(IterativeRun, "_round", spy)
    outcome = run("imp", splits, sparsity=0.784, rounds=3)  # rate 1 − 0.216^(1/3) = 0.4
    assert outcome.masks is not None
    names = ["1.weight", "3.weight", "5.weight"]
    sizes = {"1.weight": 24 * 784, "3.weight": 16 * 24, "5.weight": 160}
    for t, state in enumerate(after_round, start=1):
        for name in names:
            mask, weights = state[name]
            assert int(mask.sum()) == round(sizes[name] * 0.6**t)  # each layer keeps (1 − rate)^t
            assert int((weights[~mask] != 0).sum()) == 0  # pruned weights are exactly zero after training
            if t > 1:
                assert not bool((mask & ~after_round[t - 2][name][0]).any())  # nothing comes back
    assert [h["round"] for h in outcome.history] == [1, 2, 3]
    assert all(h["epochs"] == 1.0 and h["stop_reason"] == "budget" for h in outcome.history)
    assert outcome.train_epochs == 3.0 and outcome.info["train_epochs"] == 3.0
    assert outcome.info["flow_check_seconds"] == 0.0
    assert outcome.history[-1]["sparsity"] == pytest.approx(0.784, abs=2e-3)
    assert {"val_accuracy", "test_accuracy", "prune_fraction", "cumulative_epochs"} <= set(outcome.history[0])


def test_the_flow_monitor_does_not_change_training(splits: Splits) -> None:
    plain = run("imp", splits, sparsity=0.5, rounds=2, budget=BUDGET.with_(epochs=0.5))
    monitored = run(
        "imp",
        splits,
        sparsity=0.5,
        rounds=2,
        budget=BUDGET.with_(epochs=0.5),
        monitor="both",
        check_every=0.25,
        flow_subset=60,
    )
    a, b = plain_state_dict(plain.model), plain_state_dict(monitored.model)
    assert all(torch.equal(a[key], b[key]) for key in a)
    records = monitored.history[0]["monitor"]
    assert [r["epochs"] for r in records["information"]] == [0.2, 0.5]  # round(2.5) = 2 of 5 steps, then the end
    assert len(monitored.info["reference"]["flows"]["gradient"]) == 3
    assert monitored.info["monitor_seconds"] > 0 and monitored.info["flow_check_seconds"] == 0.0


def test_the_flow_free_control_shortens_every_round_but_the_last(splits: Splits) -> None:
    outcome = run("imp", splits, sparsity=0.5, rounds=3, early_round_epochs=0.2)
    assert [h["epochs"] for h in outcome.history] == [0.2, 0.2, 1.0]
    assert outcome.train_epochs == pytest.approx(1.4)


def test_infcop_with_a_loose_epsilon_stops_at_the_first_check(splits: Splits) -> None:
    outcome = run("infcop-if", splits, sparsity=0.5, rounds=2, epsilon=10.0, check_every=0.5, flow_subset=60)
    assert [h["round"] for h in outcome.history] == [0, 1, 2]  # round 0: the dense cycle ("iteration 0")
    assert [h["stop_reason"] for h in outcome.history] == ["flow", "flow", "flow"]
    assert [h["epochs"] for h in outcome.history] == [0.5, 0.5, 0.5]
    assert outcome.train_epochs == 1.5
    assert outcome.info["flow_check_seconds"] > 0
    assert outcome.info["cost_epoch_equivalents"] > 1.0
    assert len(outcome.history[0]["checks"]) == 1


def test_infcop_gf_without_the_accuracy_rule_and_a_tiny_epsilon_uses_the_budget(splits: Splits) -> None:
    outcome = run(
        "infcop-gf",
        splits,
        sparsity=0.5,
        rounds=2,
        epsilon=1e-9,
        stop_on_accuracy=False,
        check_every=0.5,
        flow_subset=60,
        dense_cycle=False,
    )
    assert [h["stop_reason"] for h in outcome.history] == ["budget", "budget"]
    assert outcome.train_epochs == 2.0
    assert [len(h["checks"]) for h in outcome.history] == [1, 1]
    assert outcome.history[0]["checks"][0]["distance"] > 0


def test_sap_rounds_remove_the_pq_fraction_and_stop_at_the_cap(splits: Splits) -> None:
    survivors = torch.cat([p.detach().reshape(-1) for p in mlp().parameters() if p.dim() > 1])
    expected = math.floor(survivors.numel() * sap_fraction(survivors, 1.0, 2.0)) / survivors.numel()
    free = run("imp", splits, rule="sap", rounds=2, budget=BUDGET.with_(epochs=0.3))
    assert free.history[0]["prune_fraction"] == pytest.approx(expected, abs=1e-12)  # global over all layers
    assert free.info["scope"] == "global"
    capped = run("imp", splits, sparsity=0.3, rule="sap", rounds=4, budget=BUDGET.with_(epochs=0.3))
    assert capped.info["final_sparsity"] == pytest.approx(0.3, abs=1e-4)
    assert capped.info["rounds_done"] < 4


def test_a_killed_run_resumes_after_its_last_round_with_the_same_result(
    splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = BUDGET.with_(epochs=0.5)
    uninterrupted = run("imp", splits, sparsity=0.6, rounds=3, budget=budget)
    original = IterativeRun._round

    def dies_in_round_three(self: IterativeRun, index: int) -> bool:
        if index == 3:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(IterativeRun, "_round", dies_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        run("imp", splits, sparsity=0.6, rounds=3, budget=budget, checkpoint_dir=tmp_path)
    monkeypatch.setattr(IterativeRun, "_round", original)
    resumed = run("imp", splits, sparsity=0.6, rounds=3, budget=budget, checkpoint_dir=tmp_path)
    a, b = plain_state_dict(uninterrupted.model), plain_state_dict(resumed.model)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [h["round"] for h in resumed.history] == [1, 2, 3]


# --------------------------------------------------------------------- bad input, before training
def untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in plain_state_dict(model).items())


@pytest.mark.parametrize(
    ("method", "options", "budget", "message"),
    [
        ("infcop-if", {"check_every": 2.0}, BUDGET, "check_every .* exceeds the per-round budget"),
        ("imp", {"monitor": "gradient", "check_every": 1.5}, BUDGET, "exceeds the per-round budget"),
        ("infcop-gf", {"flow_subset": 92}, BUDGET, "flow subset must hold 2 to 91 validation images"),
        ("imp", {"rule": "sap"}, BUDGET.with_(epochs=0.0), "budget must be > 0 epochs"),
        ("imp", {"early_round_epochs": 1.5}, BUDGET, "early_round_epochs .* exceeds the per-round budget"),
    ],
)
def test_bad_input_is_rejected_before_any_training(
    splits: Splits, method: str, options: dict[str, Any], budget: TrainConfig, message: str
) -> None:
    model = mlp()
    before = {k: v.clone() for k, v in plain_state_dict(model).items()}
    with pytest.raises(UsageError, match=message):
        run(method, splits, sparsity=0.5, model=model, budget=budget, **options)
    assert untouched(model, before)


def test_a_model_with_one_prunable_layer_is_rejected(splits: Splits) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(UsageError, match="at least two prunable Conv2d/Linear layers"):
        run("infcop-if", splits, sparsity=0.5, model=model)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("infcop-if", {"epsilon": 0.0}, "epsilon: Input should be greater than 0"),
        ("infcop-gf", {"epsilon": -1}, "epsilon: Input should be greater than 0"),
        ("infcop-gf", {"flow_absolute": True}, "apply to information flow"),
        ("imp", {"rule": "sap", "rate": 0.2}, "rate applies to rule 'lth' only"),
        ("imp", {"sap_p": 2.0, "sap_q": 1.0}, "sap_p < sap_q"),
        ("imp", {"epsilon": 0.1}, "unknown key 'epsilon'"),
        ("infcop-if", {"check_every": 0}, "check_every: Input should be greater than 0"),
    ],
)
def test_bad_options_are_config_errors(method: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        METHODS.get(method).parse_options(options)


def test_sap_is_global_only(splits: Splits) -> None:
    entry = METHODS.get("imp")
    config = PruneConfig(method="imp", sparsity=0.0, scope="layerwise", options={"rule": "sap"})
    context = PruneContext(
        example_inputs=torch.zeros(1), generator=torch.Generator(), splits=splits, train_config=BUDGET
    )
    with pytest.raises(ConfigError, match="rule 'sap' is global"):
        entry.apply(mlp(), config, entry.parse_options(config.options), context)


def test_missing_budget_names_the_flag(splits: Splits) -> None:
    entry = METHODS.get("infcop-if")
    config = PruneConfig(method="infcop-if", sparsity=0.5)
    context = PruneContext(example_inputs=torch.zeros(1), generator=torch.Generator(), splits=splits)
    with pytest.raises(UsageError, match="--finetune-epochs"):
        entry.apply(mlp(), config, entry.parse_options({}), context)


def test_fixed_fraction_rule_global_scope_keeps_the_largest_over_all_layers() -> None:
    magnitudes = {"a": torch.tensor([0.1, 0.9, 0.5, 0.0]), "b": torch.tensor([0.8, 0.2, 0.7, 0.3])}
    alive = {"a": torch.tensor([True, True, True, False]), "b": torch.ones(4, dtype=torch.bool)}
    start = {"a": 3, "b": 4}
    # keep = 4/7 of the 7 starting survivors → the 4 largest: 0.9, 0.8, 0.7, 0.5.
    masks = fixed_fraction_masks(magnitudes, alive, start, 4 / 7, granularity("element"), scope="global")
    assert masks["a"].tolist() == [False, True, True, False]
    assert masks["b"].tolist() == [True, False, True, False]
    # Layer-wise: each layer keeps round(a_l · keep): a → round(1.71) = 2, b → round(2.29) = 2.
    masks = fixed_fraction_masks(magnitudes, alive, start, 4 / 7, granularity("element"))
    assert masks["a"].tolist() == [False, True, True, False]
    assert masks["b"].tolist() == [True, False, True, False]


def test_the_python_api_runs_infcop_on_a_model_of_ones_own(splits: Splits) -> None:
    import secateurs as sec

    result = sec.prune(
        mlp(),
        "infcop-gf",
        0.75,
        example_inputs=splits.val.x[:2].float(),
        splits=splits,
        train_config=BUDGET,
        rounds=2,
        epsilon=100.0,
        flow_subset=40,
    )
    assert [h["stop_reason"] for h in result.history] == ["flow", "flow", "flow"]
    assert result.train_epochs == 1.5  # the dense cycle and two rounds, each stopped at its first 0.5-epoch check
    assert result.masks is not None and result.masks.sparsity() == pytest.approx(0.75, abs=2e-3)


@pytest.mark.parametrize("rewind", ["initial", "warmup"])
def test_rewind_point_is_before_or_after_the_methods_own_warm_up(
    splits: Splits, monkeypatch: pytest.MonkeyPatch, rewind: str
) -> None:
    import secateurs.methods.iterative_run as engine

    points: list[dict[str, torch.Tensor]] = []
    real_rewind = engine.rewind_

    def spy(model: nn.Module, point: dict[str, torch.Tensor], masks: Any, **kwargs: Any) -> list[str]:
        points.append(point)
        return real_rewind(model, point, masks, **kwargs)

    monkeypatch.setattr(engine, "rewind_", spy)
    model = mlp()
    given = {k: v.clone() for k, v in plain_state_dict(model).items()}
    outcome = run("imp", splits, sparsity=0.5, model=model, rounds=1, warmup_epochs=0.5, rewind=rewind)
    assert outcome.train_epochs == 1.5  # the warm-up is part of the cost
    same = all(torch.equal(points[0][k], given[k]) for k in given)
    assert same is (rewind == "initial")


def test_the_dense_cycle_trains_unpruned_once_before_round_one_and_keeps_the_rewind_point(
    splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secateurs.methods.iterative_run as engine

    rewinds: list[dict[str, torch.Tensor]] = []
    real = engine.rewind_

    def recording(model: nn.Module, point: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> None:
        rewinds.append({k: v.clone() for k, v in point.items()})
        real(model, point, *args, **kwargs)

    monkeypatch.setattr(engine, "rewind_", recording)
    model = mlp()
    given = {name: value.clone() for name, value in model.state_dict().items()}
    with_cycle = run("imp", splits, sparsity=0.5, rounds=2, model=model, dense_cycle=True)
    dense, first = with_cycle.history[0], with_cycle.history[1]
    assert (dense["round"], dense["prune_fraction"], dense["sparsity"]) == (0, 0.0, 0.0)
    assert dense["epochs"] == BUDGET.epochs and with_cycle.train_epochs == 3 * BUDGET.epochs
    assert len(rewinds) == 2  # rounds 1 and 2 rewind; the dense cycle does not
    for name, value in rewinds[0].items():  # to the given weights (no warm-up), not to the dense cycle's
        assert torch.equal(value, given[name])
    without = run("imp", splits, sparsity=0.5, rounds=2)
    assert [h["round"] for h in without.history] == [1, 2]
    assert first["sparsity"] == pytest.approx(without.history[0]["sparsity"])
    assert METHODS.get("infcop-if").parse_options({}).dense_cycle is True  # the paper's loop
    assert METHODS.get("imp").parse_options({}).dense_cycle is False  # classic IMP
