"""One process vs ``torchrun --nproc_per_node=2`` (gloo, CPU): same global batch and seed, same result?

Trains lenet300 once with one process and once with two, then prunes the *one-process* dense run with
magnitude (90 %) and fine-tunes it with one and with two processes. Prints a Markdown table of the
accuracies, the largest weight difference and whether the masks are identical, and writes the rows to
``--json`` (default ``results/torchrun-equivalence.json``; docs/reliability.md shows that file).

    python benchmarks/torchrun_equivalence.py [--data fashion-mnist --train-subset 12000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from secateurs.io.files import load_tensors

ROOT = Path(__file__).resolve().parents[1]


def secateurs(processes: int, argv: list[str]) -> None:
    env = {**os.environ, "SECATEURS_NO_REEXEC": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    if processes == 1:
        command = [sys.executable, "-m", "secateurs", "--quiet", "--threads", "1", *argv]
    else:
        launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [launcher, "--standalone", f"--nproc_per_node={processes}", "-m", "secateurs", "--quiet", *argv]
    subprocess.run(command, env=env, check=True, capture_output=True)


def compare(reference: Path, other: Path) -> dict[str, Any]:
    a, b = (json.loads((path / "run.json").read_text())["metrics"] for path in (reference, other))
    weights = [load_tensors(path / "model.safetensors") for path in (reference, other)]
    difference = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    row: dict[str, Any] = {
        "val_accuracy": [a["val_accuracy"], b["val_accuracy"]],
        "test_accuracy": [a["test_accuracy"], b["test_accuracy"]],
        "max_weight_difference": difference,
    }
    if (reference / "masks.safetensors").exists():
        masks = [load_tensors(path / "masks.safetensors") for path in (reference, other)]
        row["masks_identical"] = all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--batch-size", default="64")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "torchrun-equivalence.json")
    args = parser.parse_args()
    subset = ["--train-subset", str(args.train_subset)] if args.train_subset else []
    common = ["--data", args.data, "--no-latency", "--seed", "0", "--batch-size", args.batch_size, *subset]
    work = Path(tempfile.mkdtemp(prefix="torchrun-equivalence-"))
    train = ["train", "--model", "lenet300", "--epochs", args.epochs, "--lr", "0.05", "--split", "tail", *common]
    prune = ["prune", "--from", str(work / "dense-1"), "--method", "magnitude", "--sparsity", "0.9"]
    prune += ["--finetune-epochs", "1", "--finetune-lr", "0.01", "--finetune-batch-size", args.batch_size]
    for processes in (1, 2):
        secateurs(processes, [*train, "--out", str(work / f"dense-{processes}")])
    for processes in (1, 2):
        secateurs(
            processes, [*prune, "--seed", "0", "--no-latency", *subset, "--out", str(work / f"pruned-{processes}")]
        )
    rows = {
        "setting": {
            "data": args.data,
            "train_subset": args.train_subset,
            "epochs": args.epochs,
            "batch": args.batch_size,
        },
        "train": compare(work / "dense-1", work / "dense-2"),
        "prune": compare(work / "pruned-1", work / "pruned-2"),
    }
    print("| run | val acc 1 / 2 processes | test acc 1 / 2 processes | max weight difference | masks identical |")
    print("|---|---|---|---|---|")
    for name in ("train", "prune"):
        row = rows[name]
        print(
            f"| {name} | {row['val_accuracy'][0]:.4f} / {row['val_accuracy'][1]:.4f} | "
            f"{row['test_accuracy'][0]:.4f} / {row['test_accuracy'][1]:.4f} | {row['max_weight_difference']:.1e} | "
            f"{row.get('masks_identical', '–')} |"
        )
    existing = json.loads(args.json.read_text()) if args.json.exists() else {}
    existing[f"{args.data}-{args.train_subset or 'all'}"] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(existing, indent=2) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
