"""Allocation policies of the unstructured methods, scope refusals, and the typed options contract."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

import secateurs as sec
from secateurs.config import PruneConfig
from secateurs.errors import ConfigError
from secateurs.methods import METHODS, Method, PruneContext, PruneOutcome
from secateurs.methods.base import NoOptions, SelectionOptions
from secateurs.methods.hap import HapOptions
from secateurs.methods.lookahead import ForwardOptions, LookaheadOptions
from secateurs.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def lenet300() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet300", (1, 28, 28), 10)


def masks_of(method: str, **keywords: object) -> dict[str, torch.Tensor]:
    result = sec.prune(lenet300(), method, 0.8, example_inputs=torch.zeros(2, 1, 28, 28), **keywords)  # type: ignore[arg-type]
    assert result.masks is not None
    return dict(result.masks.items())


def test_normalized_scope_is_the_normalised_global_baseline() -> None:
    normalized = masks_of("magnitude", scope="normalized")
    assert all(torch.equal(a, b) for a, b in zip(normalized.values(), masks_of("magnitude-global").values()))
    raw = masks_of("magnitude", scope="global")
    assert any(not torch.equal(a, b) for a, b in zip(normalized.values(), raw.values()))
    by_mean = masks_of("magnitude", scope="normalized", normalizer="mean")
    assert any(not torch.equal(a, b) for a, b in zip(normalized.values(), by_mean.values()))
    # the mean normalizer by hand: each layer's |w| divided by its mean |w|, one global threshold
    model = lenet300()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    scores = torch.cat([(m.weight.abs() / m.weight.abs().mean()).reshape(-1) for m in layers])
    threshold = scores.sort(descending=True).values[round(0.2 * scores.numel()) - 1]
    kept = torch.cat([mask.reshape(-1) for mask in by_mean.values()])
    assert int(kept.sum()) == round(0.2 * scores.numel())
    assert bool((scores[kept] >= threshold).all())


def test_the_policy_and_normalizer_are_recorded() -> None:
    inputs = torch.zeros(2, 1, 28, 28)
    info = sec.prune(lenet300(), "magnitude-global", 0.5, example_inputs=inputs).info
    assert (info["scope"], info["normalizer"]) == ("normalized", "l2")
    info = sec.prune(lenet300(), "lap", 0.5, example_inputs=inputs).info
    assert (info["scope"], info["normalizer"]) == ("layerwise", None)


@pytest.mark.parametrize("method", ["imp", "infcop-if", "campfire", "gmp"])
def test_methods_without_the_normalized_policy_refuse_it_in_one_line(method: str) -> None:
    expected = rf"method {method!r} does not take scope 'normalized'; accepted: layerwise, global$"
    with pytest.raises(ConfigError, match=expected):
        METHODS.get(method).check_config(PruneConfig(method=method, sparsity=0.5, scope="normalized"))


def test_every_structured_method_takes_every_policy_and_defaults_as_before() -> None:
    defaults = {name: m.default_scope for name, m in METHODS.items() if m.kind == "structured"}
    assert all(METHODS.get(name).scopes == ("layerwise", "global", "normalized") for name in defaults)
    assert {name: scope for name, scope in defaults.items() if scope == "global"} == {
        "hap": "global",
        "hap-nonorm": "global",
        "hap-raw": "global",
        "oracle-channel": "global",
        "taylor": "global",
    }
    layerwise = {name for name, scope in defaults.items() if scope == "layerwise"}
    assert layerwise == {"l1-filter", "l2-filter", "random-channel"}
    assert {name for name, scope in defaults.items() if scope == "normalized"} == {
        "tp-hessian",
        "tp-hessian-fixed",
        "tp-magnitude",
        "tp-taylor",
    }


# ------------------------------------------------------------------------------------- typed options
def test_options_come_from_the_type_argument_and_parse_to_it() -> None:
    assert METHODS.get("hap").Options is HapOptions
    assert METHODS.get("lap").Options is LookaheadOptions
    assert METHODS.get("lap-forward").Options is ForwardOptions  # narrowed by a subclass
    assert METHODS.get("magnitude").Options is SelectionOptions
    parsed = METHODS.get("hap").parse_options({"implant_ratio": 0.2, "normalizer": "l2"})
    assert isinstance(parsed, HapOptions) and parsed.implant_ratio == 0.2 and parsed.normalizer == "l2"
    with pytest.raises(ConfigError, match="method 'hap'"):
        METHODS.get("hap").parse_options({"implant_ratio": 2})


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strength: float = 1.0


def test_a_new_method_names_its_options_once() -> None:
    class Toy(Method[ToyOptions]):
        name = "toy"
        kind = "unstructured"
        description = "a method defined in a test"

        def apply(
            self, model: nn.Module, config: PruneConfig, options: ToyOptions, context: PruneContext
        ) -> PruneOutcome:
            return PruneOutcome(model=model, info={"strength": options.strength})

    assert Toy.Options is ToyOptions and Toy().parse_options({"strength": 3}).strength == 3.0


def test_options_that_do_not_subclass_the_type_argument_are_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"Wrong.Options \(NoOptions\) must subclass ToyOptions"):

        class Wrong(Method[ToyOptions]):
            Options = NoOptions
