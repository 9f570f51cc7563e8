"""Inference latency of one model, or of several measured side by side.

Timings on a CPU are noisy; three things keep them honest here:

* glibc's default malloc returns big blocks to the OS and maps them again on every batch, which made
  batch-256 inference swing between 160 and 230 ms on the project machine; with `ALLOCATOR_ENV` set
  in the environment **before the process starts** it was a stable 102 ms. The result records whether
  it was set (`allocator_env_is_set`); this module never changes the environment.
* `compare_latency` measures several models round-robin (one call of each per round, the starting
  model rotating each round), so machine noise hits them alike and ratios stay meaningful.
* The median and the 90th percentile are reported next to the minimum, never a mean.

Inputs are ``torch.randn`` drawn from a fixed generator; the forward passes run in eval mode under
``torch.inference_mode()``, or under ``torch.no_grad()`` for a model that holds sparse CSR tensors
(``F.linear`` with a CSR weight fails under inference mode).

The timing loop itself knows nothing about PyTorch models: it times `Runner` objects (a zero-argument
call plus an untimed context), built per batch size by a `RunnerFactory`. `compare_runners` is what
`compare_latency` uses for models, what the onnxruntime measurement uses for sessions, and what a
per-layer latency table can use for single layers at candidate widths.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.metrics.counts import model_device_and_dtype, validate_input_shape
from secateurs.runtime.malloc import ALLOCATOR_ENV, allocator_env_is_set

__all__ = [
    "ALLOCATOR_ENV",
    "Runner",
    "RunnerFactory",
    "allocator_env_is_set",
    "compare_latency",
    "compare_runners",
    "contains_sparse_csr",
    "measure_latency",
    "random_input",
    "summarize_times_ns",
    "time_round_robin",
    "torch_threads",
    "validate_threads",
    "validate_timing_options",
    "wants_channels_last",
]

logger = logging.getLogger(__name__)

INPUT_SEED = 0


def contains_sparse_csr(model: nn.Module) -> bool:
    """Whether any parameter or buffer of `model` has the ``torch.sparse_csr`` layout."""
    return any(t.layout == torch.sparse_csr for t in (*model.parameters(), *model.buffers()))


def wants_channels_last(model: nn.Module, input_shape: Sequence[int], channels_last: bool | None) -> bool:
    """Resolve the `channels_last` option: ``None`` means on for 4-D inputs of models with a Conv2d.

    `input_shape` excludes the batch dimension, so a 4-D input is a 3-D `input_shape`.
    """
    if channels_last is not None:
        return channels_last
    return len(input_shape) == 3 and any(isinstance(m, nn.Conv2d) for m in model.modules())


def summarize_times_ns(times_ns: Sequence[int]) -> dict[str, float | int]:
    """Summarise per-call times in nanoseconds as ``{median_ms, p90_ms, min_ms, repeats}``.

    The 90th percentile interpolates linearly between order statistics (numpy's default): with the
    sorted times ``t_0 ≤ … ≤ t_{n-1}`` it is ``t_i + f·(t_{i+1} - t_i)`` where ``i + f = 0.9·(n-1)``.
    Raises `UsageError` when `times_ns` is empty.
    """
    if not times_ns:
        raise UsageError("summarize_times_ns needs at least one time; got none")
    ordered = sorted(times_ns)
    position = 0.9 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    p90 = ordered[low] + (position - low) * (ordered[high] - ordered[low])
    return {
        "median_ms": statistics.median(ordered) / 1e6,
        "p90_ms": p90 / 1e6,
        "min_ms": ordered[0] / 1e6,
        "repeats": len(ordered),
    }


def validate_timing_options(batch_sizes: Sequence[int], warmup: int, repeats: int, min_seconds: float) -> None:
    """Raise `UsageError` naming the value unless batch sizes are ints >= 1 (at least one), ``warmup >= 0``,
    ``repeats >= 1`` and `min_seconds` is finite and >= 0."""
    if not batch_sizes:
        raise UsageError("batch_sizes must name at least one batch size; got an empty sequence")
    for batch_size in batch_sizes:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UsageError(f"batch sizes must be ints >= 1; got {batch_size!r} in {list(batch_sizes)!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise UsageError(f"repeats must be an int >= 1; got {repeats!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise UsageError(f"warmup must be an int >= 0; got {warmup!r}")
    if not (min_seconds >= 0.0 and math.isfinite(min_seconds)):
        raise UsageError(f"min_seconds must be a finite number >= 0; got {min_seconds!r}")


def validate_threads(threads: int | None) -> None:
    """Raise `UsageError` unless `threads` is None or an int >= 1."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UsageError(f"threads must be an int >= 1 or None; got {threads!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Hold ``torch.set_num_threads(threads)`` (unchanged for None) and yield the count in effect.

    The previous count is restored on exit. Raises `UsageError` for a count < 1.
    """
    validate_threads(threads)
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def random_input(batch_size: int, input_shape: Sequence[int]) -> torch.Tensor:
    """The timing input: ``torch.randn((batch_size, *input_shape))`` from a generator seeded `INPUT_SEED`."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn((batch_size, *input_shape), generator=generator)


@dataclass(frozen=True)
class Runner:
    """One thing to time: ``call()`` runs one inference and returns once it has finished.

    ``context`` is entered around each call but outside the timed interval (grad mode, for example).
    """

    call: Callable[[], object]
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext


RunnerFactory = Callable[[int], Runner]
"""Builds the `Runner` for one batch size (the input is created here, untimed)."""


def time_round_robin(
    runners: Mapping[str, Runner], *, warmup: int, repeats: int, min_seconds: float = 0.0
) -> dict[str, list[int]]:
    """Per-call times in ns of every runner, interleaved round-robin.

    Every runner first makes `warmup` untimed calls; then rounds follow in which each runner is
    called once (timed with ``time.perf_counter_ns``, the starting runner rotating each round), at
    least `repeats` rounds and until each runner has accumulated `min_seconds` of timed calls.
    """
    names = list(runners)
    for name in names:
        runner = runners[name]
        with runner.context():
            for _ in range(warmup):
                runner.call()
    times: dict[str, list[int]] = {name: [] for name in names}
    min_ns = min_seconds * 1e9
    round_index = 0
    while round_index < repeats or any(sum(t) < min_ns for t in times.values()):
        offset = round_index % len(names)
        for name in names[offset:] + names[:offset]:
            runner = runners[name]
            with runner.context():
                start = time.perf_counter_ns()
                runner.call()
                times[name].append(time.perf_counter_ns() - start)
        round_index += 1
    return times


def compare_runners(
    factories: Mapping[str, RunnerFactory],
    *,
    batch_sizes: Sequence[int] = (1, 256),
    warmup: int = 5,
    repeats: int = 30,
    min_seconds: float = 0.0,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Time several runners side by side at each batch size: ``{name: {"batch_<b>": summary}}``.

    For each batch size every factory builds its runner, then `time_round_robin` times them together;
    each summary is `summarize_times_ns` of the per-call times. Thread counts are the caller's business
    (`torch_threads`). Raises `UsageError` for no factories or bad `batch_sizes`/`warmup`/`repeats`/
    `min_seconds`.
    """
    if not factories:
        raise UsageError("compare_runners needs at least one runner; got an empty mapping")
    validate_timing_options(batch_sizes, warmup, repeats, min_seconds)
    results: dict[str, dict[str, dict[str, float | int]]] = {name: {} for name in factories}
    for batch_size in batch_sizes:
        runners = {name: factory(batch_size) for name, factory in factories.items()}
        times = time_round_robin(runners, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
        for name, name_times in times.items():
            results[name][f"batch_{batch_size}"] = summarize_times_ns(name_times)
    return results


def _copy_model(model: nn.Module) -> nn.Module:
    """Deep copy of `model`; sparse tensors (which ``copy.deepcopy`` cannot copy) are cloned."""
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.layout != torch.strided:
            clone = tensor.detach().clone()
            if isinstance(tensor, nn.Parameter):
                clone = nn.Parameter(clone, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = clone
    return copy.deepcopy(model, memo)


class _Subject:
    """One model prepared for timing: eval mode, memory format, grad mode and device sync."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], channels_last: bool | None) -> None:
        self.original = model
        self.channels_last = wants_channels_last(model, input_shape, channels_last)
        # Converting the memory format mutates the parameters: do it on a copy.
        self.model = _copy_model(model) if self.channels_last else model
        if self.channels_last:
            # Module.to accepts memory_format (documented), torch's type stubs do not say so.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.device, self.dtype = model_device_and_dtype(self.model)
        self.no_grad = contains_sparse_csr(self.model)
        self.input_shape = input_shape
        self.training_flags = {m: m.training for m in self.original.modules()}

    def grad_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.no_grad() if self.no_grad else torch.inference_mode()

    def make_input(self, batch_size: int) -> torch.Tensor:
        x = random_input(batch_size, self.input_shape).to(device=self.device, dtype=self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def runner(self, batch_size: int) -> Runner:
        """A `Runner` calling the prepared model on one input of `batch_size` and waiting for it."""
        model, x, synchronize = self.model, self.make_input(batch_size), self.synchronize()

        def call() -> None:
            model(x)
            synchronize()

        return Runner(call=call, context=self.grad_context)

    def synchronize(self) -> Callable[[], None]:
        if self.device.type == "cuda":
            return lambda: torch.cuda.synchronize(self.device)
        return lambda: None

    def restore(self) -> None:
        for module, training in self.training_flags.items():
            module.training = training


def compare_latency(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    *,
    batch_sizes: Sequence[int] = (1, 256),
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    channels_last: bool | None = None,
    min_seconds: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Time ``model(x)`` for several models, interleaved, and return ``{name: result}``.

    Each result is what `measure_latency` returns. For each batch size every model first runs
    `warmup` untimed calls; then rounds follow in which every model is called once (timed with
    ``time.perf_counter_ns``, the starting model rotating each round), at least `repeats` rounds and
    until every model has accumulated `min_seconds` of timed calls.

    Mutates nothing that outlives the call: each model is put in eval mode and its modules' training
    flags are restored afterwards; a model converted to channels_last is converted as a deep copy;
    ``torch.set_num_threads(threads)`` holds during the measurement only. Raises `UsageError` for an
    empty `models`, batch sizes < 1, ``repeats < 1``, ``warmup < 0``, ``min_seconds < 0``,
    ``threads < 1`` or a malformed `input_shape`.
    """
    if not models:
        raise UsageError("compare_latency needs at least one model; got an empty dict")
    shape = validate_input_shape(input_shape)
    validate_timing_options(batch_sizes, warmup, repeats, min_seconds)
    validate_threads(threads)
    if not allocator_env_is_set():
        logger.warning(
            "timing without %s in the environment: CPU timings may swing widely (set it before start)",
            " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items()),
        )

    subjects: dict[str, _Subject] = {}
    try:
        with torch_threads(threads) as threads_used:
            for name, model in models.items():
                subjects[name] = _Subject(model, shape, channels_last)
                subjects[name].model.eval()
            timings = compare_runners(
                {name: subject.runner for name, subject in subjects.items()},
                batch_sizes=batch_sizes,
                warmup=warmup,
                repeats=repeats,
                min_seconds=min_seconds,
            )
        return {
            name: {
                "threads": threads_used,
                "allocator_env": allocator_env_is_set(),
                "channels_last": subject.channels_last,
                "grad_mode": "no_grad" if subject.no_grad else "inference_mode",
                **timings[name],
            }
            for name, subject in subjects.items()
        }
    finally:
        for subject in subjects.values():
            subject.restore()


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_sizes: Sequence[int] = (1, 256),
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    channels_last: bool | None = None,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Time ``model(x)`` on inputs of shape ``(b, *input_shape)`` for each batch size `b`.

    Returns ``{"threads": threads used, "allocator_env": allocator_env_is_set(), "channels_last":
    bool, "grad_mode": "inference_mode" | "no_grad", "batch_<b>": {"median_ms", "p90_ms", "min_ms",
    "repeats"}}``. `channels_last=None` turns it on for 4-D inputs of models that contain a Conv2d;
    the conversion happens on a deep copy. At least `repeats` timed calls follow `warmup` untimed ones,
    more until `min_seconds` of timed calls have accumulated. See `compare_latency` for what is
    restored afterwards and which arguments raise `UsageError`.
    """
    return compare_latency(
        {"model": model},
        input_shape,
        batch_sizes=batch_sizes,
        warmup=warmup,
        repeats=repeats,
        threads=threads,
        channels_last=channels_last,
        min_seconds=min_seconds,
    )["model"]
