"""Masked training step vs dense training step, measured side by side (issue 2: target ≤ 1.15×).

For each model, a dense copy and a copy with 90 % element masks (MaskStore parametrizations, bound to
the optimizer: hard masks) take SGD steps (momentum, weight decay) on the same random batch, interleaved
round by round so machine noise hits both alike. Prints the median step times and their ratio.

    python benchmarks/masked_step.py [--models lenet300 lenet5 resnet20] [--batch 128] [--rounds 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from secateurs.allocator import allocator_env_is_set
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names
from secateurs.train.loop import has_conv


def step_timer(model: nn.Module, masks: MaskStore | None, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if masks is not None:
        masks.bind_optimizer(optimizer)

    def step() -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - started

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5", "resnet20"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"threads {torch.get_num_threads()}, allocator env set: {allocator_env_is_set()}, batch {args.batch}")
    print(f"{'model':12} {'dense ms':>10} {'masked ms':>10} {'ratio':>7}")
    for name in args.models:
        torch.manual_seed(0)
        dense = build_model(name, (1, 28, 28), 10)
        masked = copy.deepcopy(dense)
        store = MaskStore(masked)
        for weight in prunable_names(masked):
            shape = masked.get_parameter(weight).shape
            store.set_(weight, torch.rand(shape, generator=generator) >= args.sparsity)
        x = torch.randn(args.batch, 1, 28, 28, generator=generator)
        y = torch.randint(0, 10, (args.batch,), generator=generator)
        if has_conv(dense):
            x = x.contiguous(memory_format=torch.channels_last)
            dense.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            masked.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        steps = {"dense": step_timer(dense, None, x, y), "masked": step_timer(masked, store, x, y)}
        times: dict[str, list[float]] = {"dense": [], "masked": []}
        for round_index in range(args.rounds + 3):
            order = ("dense", "masked") if round_index % 2 == 0 else ("masked", "dense")
            for key in order:
                elapsed = steps[key]()
                if round_index >= 3:  # warm-up rounds are not recorded
                    times[key].append(elapsed)
        dense_ms = 1000 * statistics.median(times["dense"])
        masked_ms = 1000 * statistics.median(times["masked"])
        print(f"{name:12} {dense_ms:10.2f} {masked_ms:10.2f} {masked_ms / dense_ms:6.2f}×")


if __name__ == "__main__":
    main()
