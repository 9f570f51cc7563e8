"""The public Python API: prune your own model, train, evaluate, save, load, and run directories.

    import secateurs as sec
    result = sec.prune(model, method="magnitude", sparsity=0.9, example_inputs=x)
    result.model          # the masked (or physically smaller) model, ready for your own fine-tuning
    print(result.report())
    sec.save(result, "out/")
    run = sec.load("out/", model_factory=lambda: MyNet())
    sparsifier = sec.gradual(model, "campfire", granularity="window", sparsity=0.7, end_step=3000)
    sec.export(result, format="onnx", path="model.onnx")   # or a run directory
    twin = sec.masked_equivalent(result)                    # a structured result's masked twin

The run-directory level (`train_run`, `prune_run`, `evaluate_run`, `run_recipe`) is what the CLI
and the bench call: every command goes through this package.
"""

from secateurs.api.deploy import export, masked_equivalent
from secateurs.api.measure import measure_model
from secateurs.api.persist import load, save
from secateurs.api.pruning import PruneResult, build_context, gradual, prune, prune_config
from secateurs.api.recipes import run_recipe
from secateurs.api.runs import RunOptions, evaluate_run, load_splits, prune_and_finetune, prune_run, train_run
from secateurs.api.training import build_initialized, evaluate, train

__all__ = [
    "PruneResult",
    "RunOptions",
    "build_context",
    "build_initialized",
    "evaluate",
    "evaluate_run",
    "export",
    "gradual",
    "load",
    "load_splits",
    "masked_equivalent",
    "measure_model",
    "prune",
    "prune_and_finetune",
    "prune_config",
    "prune_run",
    "run_recipe",
    "save",
    "train",
    "train_run",
]
