"""Latency measurement: result structure, restored state, options. No assertions on speed."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from secateurs.errors import UsageError
from secateurs.latency.timing import (
    compare_latency,
    contains_sparse_csr,
    measure_latency,
    summarize_times_ns,
    wants_channels_last,
)
from secateurs.runtime.malloc import ALLOCATOR_ENV, allocator_env_is_set

FAST = {"warmup": 1, "repeats": 3}


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


class CSRLinear(nn.Module):
    """A linear layer whose weight is a sparse CSR buffer (fails under ``inference_mode``)."""

    def __init__(self) -> None:
        super().__init__()
        dense = torch.randn(5, 6) * (torch.rand(5, 6) > 0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self.register_buffer("weight", dense.to_sparse_csr())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Recorder(nn.Module):
    """Identity that records its tag on every call (through a closure, which deepcopy shares)."""

    def __init__(self, record: Callable[[], None]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.record = record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record()
        return x * self.scale


def test_result_structure() -> None:
    result = measure_latency(small_cnn(), (1, 8, 8), batch_sizes=(1, 4), **FAST)
    assert set(result) == {"threads", "allocator_env", "channels_last", "grad_mode", "batch_1", "batch_4"}
    assert result["threads"] == torch.get_num_threads()
    assert result["allocator_env"] is allocator_env_is_set()
    assert result["grad_mode"] == "inference_mode"
    for key in ("batch_1", "batch_4"):
        stats = result[key]
        assert set(stats) == {"median_ms", "p90_ms", "min_ms", "repeats"}
        assert stats["repeats"] == 3
        assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]


def test_summarize_times_matches_hand_computed_percentiles() -> None:
    stats = summarize_times_ns([5_000_000, 1_000_000, 3_000_000, 2_000_000, 4_000_000])
    # sorted 1..5 ms; median 3 ms; p90 at position 0.9·4 = 3.6 → 4 + 0.6·(5-4) = 4.6 ms
    assert stats == {"median_ms": 3.0, "p90_ms": pytest.approx(4.6), "min_ms": 1.0, "repeats": 5}
    assert summarize_times_ns([7_000_000])["p90_ms"] == 7.0


def test_threads_are_set_during_and_restored_after() -> None:
    before = torch.get_num_threads()
    result = measure_latency(nn.Linear(4, 4), (4,), batch_sizes=(2,), threads=1, **FAST)
    assert result["threads"] == 1
    assert torch.get_num_threads() == before


def test_train_flags_and_memory_format_are_left_alone() -> None:
    model = small_cnn().train()
    model[1].eval()
    result = measure_latency(model, (1, 8, 8), batch_sizes=(2,), **FAST)
    assert result["channels_last"] is True
    assert model.training and model[0].training and not model[1].training
    assert model[0].weight.is_contiguous()  # the conversion happened on a copy


def test_channels_last_decision() -> None:
    cnn, mlp = small_cnn(), nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    assert wants_channels_last(cnn, (1, 8, 8), None) is True
    assert wants_channels_last(cnn, (64,), None) is False
    assert wants_channels_last(mlp, (1, 8, 8), None) is False
    assert wants_channels_last(mlp, (1, 8, 8), True) is True
    assert wants_channels_last(cnn, (1, 8, 8), False) is False
    assert measure_latency(cnn, (1, 8, 8), batch_sizes=(1,), channels_last=False, **FAST)["channels_last"] is False
    assert measure_latency(mlp, (1, 8, 8), batch_sizes=(1,), **FAST)["channels_last"] is False


def test_parametrized_model_is_measured_and_left_alone() -> None:
    model = small_cnn()
    parametrize.register_parametrization(model[0], "weight", _Scale())
    result = measure_latency(model, (1, 8, 8), batch_sizes=(1,), **FAST)
    assert result["channels_last"] is True
    assert model[0].parametrizations.weight.original.is_contiguous()


class _Scale(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 1.0


def test_sparse_csr_models_use_no_grad() -> None:
    model = CSRLinear()
    assert contains_sparse_csr(model) and not contains_sparse_csr(nn.Linear(6, 5))
    with pytest.raises(RuntimeError), torch.inference_mode():
        model(torch.randn(2, 6))  # why detection matters
    result = measure_latency(model, (6,), batch_sizes=(1, 3), **FAST)
    assert result["grad_mode"] == "no_grad"
    assert result["batch_3"]["repeats"] == 3
    with_conv = nn.Sequential(nn.Conv2d(1, 1, kernel_size=1), nn.Flatten(), model)
    converted = measure_latency(with_conv, (1, 2, 3), batch_sizes=(1,), **FAST)
    # the deep copy made for channels_last copes with CSR buffers, which copy.deepcopy cannot copy
    assert converted["channels_last"] is True and converted["grad_mode"] == "no_grad"


def test_compare_latency_interleaves_models() -> None:
    calls: list[str] = []
    models = {tag: Recorder(lambda tag=tag: calls.append(tag)) for tag in ("a", "b", "c")}
    results = compare_latency(models, (3,), batch_sizes=(1,), warmup=0, repeats=4)
    assert set(results) == {"a", "b", "c"}
    assert all(r["batch_1"]["repeats"] == 4 for r in results.values())
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 4 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [r[0] for r in rounds] == ["a", "b", "c", "a"]  # the starting model rotates


def test_min_seconds_extends_the_repeats() -> None:
    result = measure_latency(nn.Linear(2, 2), (2,), batch_sizes=(1,), warmup=0, repeats=2, min_seconds=0.005)
    assert result["batch_1"]["repeats"] >= 2


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"batch_sizes": (1, 0)}, "0"),
        ({"batch_sizes": (-3,)}, "-3"),
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
        ({"min_seconds": -1.0}, "min_seconds"),
    ],
)
def test_bad_options_are_usage_errors(options: dict, named: str) -> None:
    with pytest.raises(UsageError, match=named):
        measure_latency(nn.Linear(2, 2), (2,), **options)


def test_empty_compare_and_allocator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="at least one model"):
        compare_latency({}, (2,))
    for key in ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    assert allocator_env_is_set() is False
    for key, value in ALLOCATOR_ENV.items():
        monkeypatch.setenv(key, value)
    assert allocator_env_is_set() is True
