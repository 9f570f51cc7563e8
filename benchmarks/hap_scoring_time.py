"""HAP's scoring cost against the same number of plain double-backward HVPs on the same data.

HAP's per-channel Hutchinson traces need one Hessian-vector product per probe; the per-channel
bookkeeping on top (probe draws, v ⊙ Hv reduced per output channel, running means and variances)
must cost no more than 10 % (issue 4: ≤ 1.1×). Both are timed in one process, alternating, on
resnet20 with the prune workflow's default calibration set size (512 images), ``--probes`` HVPs each;
the ratio of medians is printed. Because a loaded machine makes separate runs swing, it also prints
the load-robust ratio measured inside each HAP run: its total time over the time the same run spent
in what a plain HVP loop does (the model copy, the gradient graph and the HVPs themselves), i.e.
1 + the share of per-channel bookkeeping.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        PYTHONPATH=src python benchmarks/hap_scoring_time.py [--probes 10] [--rounds 3] [--images 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch import nn

from secateurs.models import build_model
from secateurs.scoring.hessian import HutchinsonConfig, hutchinson_channel_traces, hvp_baseline_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet20", (1, 28, 28), 10).eval()
    inputs = torch.randn(args.images, 1, 28, 28)
    targets = torch.randint(0, 10, (args.images,))
    batches = [
        (inputs[i : i + args.batch_size], targets[i : i + args.batch_size])
        for i in range(0, args.images, args.batch_size)
    ]
    config = HutchinsonConfig(probes=args.probes, min_probes=args.probes, tolerance=0.0)
    hap, plain, inside = [], [], []
    for round_index in range(args.rounds):
        order = ("hap", "plain") if round_index % 2 == 0 else ("plain", "hap")
        for which in order:
            generator = torch.Generator().manual_seed(round_index)
            if which == "hap":
                result = hutchinson_channel_traces(model, batches, nn.functional.cross_entropy, generator, config)
                hap.append(result.seconds)
                inside.append(result.seconds / (result.setup_seconds + result.hvp_seconds))
            else:
                plain.append(hvp_baseline_seconds(model, batches, nn.functional.cross_entropy, generator, args.probes))
        print(
            f"round {round_index}: HAP scoring {hap[-1]:.2f} s, plain HVPs {plain[-1]:.2f} s, "
            f"HAP total / its own copy+gradient+HVP time {inside[-1]:.4f}",
            flush=True,
        )
    ratio = statistics.median(hap) / statistics.median(plain)
    print(
        f"resnet20, {args.images} images, {args.probes} probes, {args.threads} thread(s): HAP scoring "
        f"{statistics.median(hap):.2f} s vs {args.probes} plain HVPs {statistics.median(plain):.2f} s "
        f"(median of {args.rounds}) -> ratio {ratio:.3f} (target <= 1.1); inside HAP's runs: "
        f"{statistics.median(inside):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
