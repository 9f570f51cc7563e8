"""How long LAP scoring takes, next to torch's own global L1 magnitude pruning on the same model.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \
        PYTHONPATH=src python benchmarks/lap_speed.py [--repeats 15] [--threads 1]

For ``mlp-lap`` (targets: < 50 ms) and ``resnet20`` (< 0.5 s), on 1×28×28 inputs, it prints medians of

* ``lap score``: the registered ``lap`` scorer on every prunable weight, neighbour structure cached
  (reading weights, neighbour norms, the score tensors);
* ``lap score+select``: the same plus layer-wise selection of 90 % sparsity (the masks, not installed);
* ``graph trace``: tracing the neighbour structure once (Torch-Pruning's DependencyGraph on a
  mask-free copy), paid once per model structure and process; ``lap cold`` = first call, trace included;
* ``torch L1``: ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=0.9)`` on a
  fresh copy (copying is not timed): scores, a global threshold and installed masks.

The measurements are interleaved (one of each per repeat), so machine load hits all alike; the
ratio column is the robust figure on a shared machine. Without the two malloc settings (the Makefile
exports them) glibc returns every large buffer to the OS and re-faults it, which costs LAP's
megabytes of score tensors several milliseconds per call; ``--threads`` sets torch's intra-op threads
for both sides (1 by default: stable on a loaded machine).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from secateurs.allocation.elements import select
from secateurs.models import build_model
from secateurs.scoring import SCORERS, ScoreContext
from secateurs.scoring.neighbours import TOPOLOGIES, trace_topology
from secateurs.sparsity.granularity import granularity
from secateurs.sparsity.targets import prunable_names


def seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def torch_global_l1(model: nn.Module) -> None:
    parameters = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=0.9)


def measure(model_name: str, repeats: int) -> dict[str, float]:
    model = build_model(model_name, (1, 28, 28), 10).eval()
    names = prunable_names(model)
    context = ScoreContext(generator=torch.Generator().manual_seed(0), example_inputs=torch.randn(2, 1, 28, 28))
    scorer = SCORERS.get("lap").score
    TOPOLOGIES.clear()
    cold = seconds(lambda: scorer(model, names, context))

    def score_and_select() -> None:
        scores = scorer(model, names, context)
        select(scores, 0.9, granularity("element"))

    timings: dict[str, list[float]] = {"lap score": [], "lap score+select": [], "graph trace": [], "torch L1": []}
    for _ in range(repeats):
        timings["lap score"].append(seconds(lambda: scorer(model, names, context)))
        timings["lap score+select"].append(seconds(score_and_select))
        timings["graph trace"].append(seconds(lambda: trace_topology(model, context.example_inputs)))  # type: ignore[arg-type]
        fresh = copy.deepcopy(model)
        timings["torch L1"].append(seconds(lambda fresh=fresh: torch_global_l1(fresh)))  # type: ignore[misc]
    result = {key: statistics.median(values) for key, values in timings.items()}
    result["lap cold"] = cold
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.repeats} interleaved repeats"
    )
    print("| model | lap score | lap score+select | lap cold (with trace) | graph trace | torch L1 | lap / torch L1 |")
    print("|---|---|---|---|---|---|---|")
    for model_name in ("mlp-lap", "resnet20"):
        r = measure(model_name, args.repeats)
        print(
            f"| {model_name} | {1000 * r['lap score']:.1f} ms | {1000 * r['lap score+select']:.1f} ms | "
            f"{1000 * r['lap cold']:.0f} ms | {1000 * r['graph trace']:.0f} ms | {1000 * r['torch L1']:.1f} ms | "
            f"{r['lap score'] / r['torch L1']:.2f} |"
        )


if __name__ == "__main__":
    main()
