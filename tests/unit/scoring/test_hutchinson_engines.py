"""Hutchinson traces through the HVP engines: the automatic fallback, and independent probe streams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.errors import StructureError
from secateurs.scoring.hessian import HutchinsonConfig, hutchinson_channel_traces, probe_stream_base

pytestmark = pytest.mark.usefixtures("one_thread")


def gated(gate: type[nn.Module] = nn.Hardsigmoid) -> nn.Module:
    """Conv → BN → hard-swish → squeeze-excite gated by ``gate`` → linear (MobileNetV3's ops)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.Hardswish()
            self.squeeze = nn.Conv2d(4, 2, 1)
            self.excite = nn.Conv2d(2, 4, 1)
            self.gate = gate()
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.bn(self.conv(x)))
            y = y * self.gate(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
            return self.head(y.mean((2, 3)))

    torch.manual_seed(0)
    return Net().eval()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    return [(x[:4], torch.arange(4) % 3), (x[4:], torch.arange(4) % 3)]


def traces(model: nn.Module, config: HutchinsonConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    result = hutchinson_channel_traces(
        model, batches(), nn.functional.cross_entropy, torch.Generator().manual_seed(seed), config
    )
    return result.traces


def test_hard_sigmoid_falls_back_to_the_rewritten_engine_with_the_same_traces() -> None:
    config = HutchinsonConfig(probes=6, min_probes=6, tolerance=0.0)
    result = hutchinson_channel_traces(
        gated(), batches(), nn.functional.cross_entropy, torch.Generator().manual_seed(0), config
    )
    assert result.engine == "double-backward-rewritten"
    assert "skipped double-backward" in result.engine_reason and "hardsigmoid" in result.engine_reason

    # hardsigmoid(x) = relu6(x + 3) / 6 exactly: the same model with the composition written out
    # takes plain double backward and gives the same estimates (same probes, same data)
    class Relu6Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.relu6(x + 3.0) / 6.0

    reference = traces(gated(Relu6Gate), config)
    for name, value in result.traces.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-9)


def test_hap_prunes_a_hard_sigmoid_model_and_records_its_engine() -> None:
    data = batches()
    result = sec.prune(
        gated(), "hap", 0.3, target="channels", example_inputs=data[0][0][:2], data=data, probes=3, min_probes=3
    )
    assert result.info["hvp_engine"] == "double-backward-rewritten"
    assert "hardsigmoid" in result.info["hvp_engine_reason"]


def test_an_engine_that_cannot_run_the_model_is_one_error() -> None:
    config = HutchinsonConfig(probes=2, min_probes=2, tolerance=0.0, engine="double-backward")
    with pytest.raises(StructureError, match="no Hessian-vector-product engine supports this model"):
        traces(gated(), config)


def test_finite_differences_on_a_relu_net_are_refused_not_returned() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3))
    config = HutchinsonConfig(probes=2, min_probes=2, tolerance=0.0, engine="finite-difference")
    try:
        result = traces(model.eval(), config)
    except StructureError as error:
        assert "finite differences are unreliable" in str(error)
    else:  # no kink crossed within ±h·v on this draw: then the estimate must be the exact one
        exact = traces(model.eval(), HutchinsonConfig(probes=2, min_probes=2, tolerance=0.0))
        for name, value in result.items():
            torch.testing.assert_close(value, exact[name], rtol=1e-3, atol=1e-6)


def test_probe_streams_depend_on_probe_seed_and_budget_only() -> None:
    model = gated(nn.Sigmoid)
    four = HutchinsonConfig(probes=4, min_probes=4, tolerance=0.0, probe_seed=7)
    same = traces(model, four, seed=0)
    other_run_seed = traces(model, four, seed=123)  # the run's generator no longer matters
    for name in same:
        assert torch.equal(same[name], other_run_seed[name])
    other_draw = traces(model, HutchinsonConfig(probes=4, min_probes=4, tolerance=0.0, probe_seed=8))
    assert any(not torch.equal(same[name], other_draw[name]) for name in same)
    assert probe_stream_base(7, 4) != probe_stream_base(7, 16)
    # a 16-probe run with the same probe_seed does not start with the 4-probe run's probes
    prefix = traces(model, HutchinsonConfig(probes=16, min_probes=4, tolerance=float("inf"), probe_seed=7))
    assert any(not torch.equal(same[name], prefix[name]) for name in same)


def test_without_probe_seed_the_stream_follows_the_run_generator() -> None:
    model = gated(nn.Sigmoid)
    config = HutchinsonConfig(probes=3, min_probes=3, tolerance=0.0)
    first, again, other = traces(model, config, seed=1), traces(model, config, seed=1), traces(model, config, seed=2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
