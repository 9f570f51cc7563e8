"""The runtime-agnostic timing loop (Runner, time_round_robin, compare_runners) and the runtime registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.latency.runtimes import RUNTIMES, LatencyOptions, measure_in_runtime
from secateurs.latency.timing import Runner, compare_runners, random_input, time_round_robin, torch_threads


def test_round_robin_rotates_and_counts() -> None:
    calls: list[str] = []
    runners = {tag: Runner(call=lambda tag=tag: calls.append(tag)) for tag in ("a", "b")}
    times = time_round_robin(runners, warmup=2, repeats=3)
    assert calls[:4] == ["a", "a", "b", "b"]  # warm-up: each runner in turn, untimed
    assert calls[4:] == ["a", "b", "b", "a", "a", "b"]  # rounds, the starting runner rotating
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for t in times["a"] + times["b"])


def test_context_is_entered_around_every_call() -> None:
    events: list[str] = []

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    runner = Runner(call=lambda: events.append("call"), context=context)
    time_round_robin({"only": runner}, warmup=1, repeats=2)
    assert events == ["enter", "call", "exit", "enter", "call", "exit", "enter", "call", "exit"]


def test_compare_runners_builds_one_runner_per_batch_size() -> None:
    built: list[int] = []

    def factory(batch_size: int) -> Runner:
        built.append(batch_size)
        return Runner(call=lambda: None)

    results = compare_runners({"x": factory, "y": factory}, batch_sizes=(1, 8), warmup=0, repeats=4)
    assert built == [1, 1, 8, 8]
    assert set(results) == {"x", "y"} and set(results["x"]) == {"batch_1", "batch_8"}
    assert results["y"]["batch_8"]["repeats"] == 4
    with pytest.raises(UsageError, match="at least one runner"):
        compare_runners({})
    with pytest.raises(UsageError, match="repeats"):
        compare_runners({"x": factory}, repeats=0)


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as inside:
        assert inside == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with torch_threads(None) as unchanged:
        assert unchanged == before
    with pytest.raises(UsageError, match="threads"), torch_threads(0):
        pass


def test_random_input_is_seeded() -> None:
    assert torch.equal(random_input(3, (2, 2)), random_input(3, (2, 2)))
    assert random_input(3, (2, 2)).shape == (3, 2, 2)


def test_runtime_registry() -> None:
    assert RUNTIMES.names() == ["csr", "onnxruntime", "torch"]
    with pytest.raises(UsageError, match=r"unknown latency runtime 'tpu'; accepted: csr, onnxruntime, torch"):
        measure_in_runtime("tpu", nn.Linear(2, 2), (2,), LatencyOptions())
    with pytest.raises(UsageError, match="batch"):
        measure_in_runtime("torch", nn.Linear(2, 2), (2,), LatencyOptions(batch_sizes=()))
    result = measure_in_runtime(
        "torch", nn.Linear(2, 2), (2,), LatencyOptions(batch_sizes=(3,), threads=1, warmup=0, repeats=2)
    )
    assert result["runtime"] == "torch" and result["threads"] == 1 and result["batch_3"]["repeats"] == 2
