"""Inference runtimes a model's latency can be measured in: a registry (``secateurs latency --runtime``).

A runtime is ``(model, input_shape, options) -> result`` where `model` is the run's model (masked or
physically pruned, not changed) and the result is a JSON-able dict holding at least ``threads``,
``allocator_env`` and, per batch size, ``batch_<b>: {median_ms, p90_ms, min_ms, repeats}``
(`summarize_times_ns`). Every runtime times with `compare_runners`, so the same warm-up, repeat and
percentile rules apply to all of them:

* ``torch``: the deployable dense model (masks baked in) in eager PyTorch under ``inference_mode``,
  ``channels_last`` for conv models (`measure_latency`).
* ``onnxruntime``: the model exported as in ``secateurs export --format onnx`` (in memory), run by an
  onnxruntime CPU session with ``intra_op_num_threads`` = the thread count, one inter-op thread and
  sequential execution, on NCHW float32 input.
* ``csr``: the model converted by `convert_to_csr` (layers below the density threshold as CSR, the rest
  dense) in eager PyTorch under ``no_grad``; a model with nothing sparse enough is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from secateurs.deploy.csr import DEFAULT_DENSITY_THRESHOLD, convert_to_csr, validate_density_threshold
from secateurs.deploy.export_onnx import INPUT_NAME, onnx_bytes, onnxruntime_session
from secateurs.latency.timing import (
    Runner,
    compare_runners,
    measure_latency,
    random_input,
    torch_threads,
    validate_threads,
    validate_timing_options,
)
from secateurs.registry import Registry
from secateurs.runtime.extras import require
from secateurs.runtime.malloc import allocator_env_is_set
from secateurs.sparsity.masks import baked_copy

__all__ = ["RUNTIMES", "LatencyOptions", "Runtime", "measure_in_runtime", "register_runtime", "validate_options"]


@dataclass(frozen=True)
class LatencyOptions:
    """How to time: batch sizes, threads (None: torch's current count), warm-up and timed calls."""

    batch_sizes: tuple[int, ...] = (1, 256)
    threads: int | None = None
    warmup: int = 5
    repeats: int = 30
    min_seconds: float = 0.0
    density_threshold: float = DEFAULT_DENSITY_THRESHOLD
    """``csr`` only: layers below this density run as CSR."""


RuntimeFn = Callable[[nn.Module, tuple[int, ...], LatencyOptions], dict[str, Any]]


@dataclass(frozen=True)
class Runtime:
    name: str
    measure: RuntimeFn
    description: str


RUNTIMES: Registry[Runtime] = Registry("latency runtime")


def register_runtime(name: str, *, description: str) -> Callable[[RuntimeFn], RuntimeFn]:
    def decorator(function: RuntimeFn) -> RuntimeFn:
        RUNTIMES.add(name, Runtime(name, function, description))
        return function

    return decorator


def measure_in_runtime(
    name: str, model: nn.Module, input_shape: tuple[int, ...], options: LatencyOptions
) -> dict[str, Any]:
    """Time `model` in runtime `name` (an unknown name is a `UsageError` listing the accepted ones)."""
    runtime = RUNTIMES.get(name)
    validate_options(options)
    return {"runtime": runtime.name, **runtime.measure(model, input_shape, options)}


def validate_options(options: LatencyOptions) -> None:
    """Raise `UsageError` naming the first bad value of `options` (before anything is measured)."""
    validate_timing_options(options.batch_sizes, options.warmup, options.repeats, options.min_seconds)
    validate_threads(options.threads)
    validate_density_threshold(options.density_threshold)


def _timing_options(options: LatencyOptions) -> dict[str, Any]:
    return {
        "batch_sizes": options.batch_sizes,
        "warmup": options.warmup,
        "repeats": options.repeats,
        "min_seconds": options.min_seconds,
    }


@register_runtime("torch", description="eager PyTorch, masks baked in, inference_mode, channels_last for convs")
def torch_runtime(model: nn.Module, input_shape: tuple[int, ...], options: LatencyOptions) -> dict[str, Any]:
    return measure_latency(baked_copy(model), input_shape, threads=options.threads, **_timing_options(options))


@register_runtime("csr", description="eager PyTorch with layers below the density threshold in sparse CSR")
def csr_runtime(model: nn.Module, input_shape: tuple[int, ...], options: LatencyOptions) -> dict[str, Any]:
    conversion = convert_to_csr(model, density_threshold=validate_density_threshold(options.density_threshold))
    result = measure_latency(conversion.model, input_shape, threads=options.threads, **_timing_options(options))
    summary = conversion.summary()
    result["csr"] = {
        key: summary[key] for key in ("density_threshold", "csr_layers", "dense_layers", "csr_nonzeros", "csr_entries")
    }
    return result


@register_runtime("onnxruntime", description="the exported ONNX graph in onnxruntime (CPU, sequential execution)")
def onnxruntime_runtime(model: nn.Module, input_shape: tuple[int, ...], options: LatencyOptions) -> dict[str, Any]:
    onnxruntime = require("onnxruntime", "the onnxruntime latency runtime")

    with torch_threads(options.threads) as threads:
        data = onnx_bytes(baked_copy(model).eval(), input_shape)
        session = onnxruntime_session(data, threads=threads)

        def runner(batch_size: int) -> Runner:
            feed = {INPUT_NAME: random_input(batch_size, input_shape).numpy()}
            return Runner(call=lambda: session.run(None, feed))

        timings = compare_runners({"onnxruntime": runner}, **_timing_options(options))["onnxruntime"]
    return {
        "threads": threads,
        "allocator_env": allocator_env_is_set(),
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "onnxruntime_version": onnxruntime.__version__,
        **timings,
    }
