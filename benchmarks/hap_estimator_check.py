"""E-HAP-3 (METHODS.md §2.6): how good are Hutchinson per-channel Hessian traces, probe by probe?

A small CNN is trained briefly on Fashion-MNIST; its exact per-channel block traces Tr(H_cc) come from
one unit-vector HVP per weight; Hutchinson estimates with n_v = 3, 10, 30, 100, 300 probes (several
generator seeds each) are compared with them. Printed per n_v: the median relative error of the
per-channel traces, the share of channels whose error is within 3 standard errors, and how much of
HAP's pruned set (the half of the channels with the lowest Tr/n_c·‖w_c‖²) differs from the one the
exact traces give. Writes ``results/hap-estimator.json`` and ``results/hap-estimator.png``.

    PYTHONPATH=src python benchmarks/hap_estimator_check.py [--seeds 5] [--images 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import load_dataset
from secateurs.scoring.hessian import HutchinsonConfig, exact_channel_traces, hutchinson_channel_traces

PROBES = (3, 10, 30, 100, 300)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.mean((2, 3)))


def hap_scores(model: nn.Module, traces: dict[str, torch.Tensor]) -> torch.Tensor:
    """Tr/n_c·‖w_c‖² of every conv output channel (the channels HAP ranks), concatenated."""
    scores = []
    for name in ("conv1", "conv2"):
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Conv2d)
        weight = layer.weight.detach().double()
        rows = weight.reshape(weight.shape[0], -1)
        scores.append(traces[name].abs() / rows.shape[1] * rows.pow(2).sum(1))
    return torch.cat(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = load_dataset("fashion-mnist")
    normalization = Normalization(dataset.mean, dataset.std)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = BatchLoader(dataset.train.subset(slice(0, 6000)), 128, normalization, shuffle=True)
    for inputs, targets in train:  # one short epoch: a trained, not converged, network
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    model.eval()
    batches = list(BatchLoader(dataset.train.subset(slice(0, args.images)), 256, normalization))
    exact = exact_channel_traces(model, batches, nn.functional.cross_entropy)
    names = [n for n in exact if n != "classifier"]
    exact_vector = torch.cat([exact[n] for n in names])
    exact_scores = hap_scores(model, exact)
    half = len(exact_scores) // 2
    exact_pruned = set(torch.argsort(exact_scores)[:half].tolist())
    rows = []
    for probes in PROBES:
        errors, coverage, changed = [], [], []
        for seed in range(args.seeds):
            config = HutchinsonConfig(probes=probes, min_probes=probes, tolerance=0.0)
            result = hutchinson_channel_traces(
                model, batches, nn.functional.cross_entropy, torch.Generator().manual_seed(seed), config
            )
            estimate = torch.cat([result.traces[n] for n in names])
            spread = torch.cat([result.standard_errors[n] for n in names])
            errors.append(float(((estimate - exact_vector).abs() / exact_vector.abs()).median()))
            coverage.append(float(((estimate - exact_vector).abs() <= 3 * spread).double().mean()))
            pruned = set(torch.argsort(hap_scores(model, result.traces))[:half].tolist())
            changed.append(1.0 - len(pruned & exact_pruned) / half)
        row = {
            "probes": probes,
            "median_relative_error": statistics.mean(errors),
            "within_3_standard_errors": statistics.mean(coverage),
            "pruned_set_changed": statistics.mean(changed),
        }
        rows.append(row)
        print(
            f"n_v={probes:>3}: median relative error {row['median_relative_error']:.3f}, "
            f"{100 * row['within_3_standard_errors']:.0f} % within 3 SE, "
            f"{100 * row['pruned_set_changed']:.1f} % of the pruned half differs from the exact one",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"channels": len(exact_scores), "images": args.images, "seeds": args.seeds, "rows": rows}
    (args.out / "hap-estimator.json").write_text(json.dumps(summary, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.loglog([r["probes"] for r in rows], [r["median_relative_error"] for r in rows], "o-", label="trace error")
    axis.loglog(
        [r["probes"] for r in rows],
        [max(r["pruned_set_changed"], 1e-3) for r in rows],
        "s--",
        label="pruned set changed",
    )
    axis.set_xlabel("Hutchinson probes n_v")
    axis.set_ylabel("fraction")
    axis.set_title("Per-channel Hessian traces vs exact (small CNN)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "hap-estimator.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
