"""`sec.export` (a run directory, a `LoadedRun` or a `PruneResult`) and `sec.masked_equivalent` on user
models: a model defined here with a subclass of ``nn.Linear`` (as timm's ``Linear`` is), timm models,
HAP with implants, and a model pruned twice. The twin equals the physically pruned model in eval mode."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.errors import ConfigError, StructureError, UsageError
from secateurs.models import build_model
from secateurs.runtime.extras import available
from secateurs.sparsity.masks import MaskStore, plain_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")
needs_timm = pytest.mark.skipif(not available("timm"), reason="timm is not installed (pip install 'secateurs[timm]')")
needs_onnx = pytest.mark.skipif(not available("onnxruntime"), reason="onnx extra not installed")


class Head(nn.Linear):
    """A subclass of nn.Linear: found by its handler through isinstance, never by ``type(...) is``."""


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.left = nn.Conv2d(8, 6, 3, padding=1)
        self.right = nn.Conv2d(8, 4, 1)
        self.head = Head(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.stem(x)))
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.head(x.mean(dim=(2, 3)))


def user_net(seed: int = 0) -> UserNet:
    torch.manual_seed(seed)
    model = UserNet().eval()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
        model.norm.bias.uniform_(-1, 1)
    return model


def inputs(shape: tuple[int, ...] = (3, 12, 12), batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


def assert_twin(result: sec.PruneResult, x: torch.Tensor, *, implants: bool = False) -> nn.Module:
    """The twin of ``result`` computes what its pruned model computes (eval mode), in the unpruned layout
    (with ``implants``: the implanted convolutions split into their kept and implant parts)."""
    twin = sec.masked_equivalent(result)
    assert result.source is not None
    if not implants:
        assert {k: v.shape for k, v in plain_state_dict(twin).items()} == {
            k: v.shape for k, v in plain_state_dict(result.source).items()
        }
    with torch.no_grad():
        pruned, masked = result.model.eval()(x), twin(x)
    assert (pruned - masked).abs().max().item() <= 1e-5 * max(1.0, pruned.abs().max().item())
    return twin


def test_the_twin_of_a_user_model_masks_exactly_the_removed_channels() -> None:
    model = user_net()
    x = inputs()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = sec.prune(model, "l2-filter", 0.4, example_inputs=x[:2])
    twin = assert_twin(result, x)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())  # unchanged
    masks = MaskStore.attached(twin)
    removed = {name: int((~masks.get(name)).sum()) for name in masks.names()}
    removals = {step.root: len(step.removed) for step in result.plan.steps}
    stem_out = removals.get("stem", 0)
    # The stem's removed filters (27 weights each) and their input slices in left (9 each) and right (1 each).
    assert removed["stem.weight"] == 27 * stem_out
    left_out, right_out = removals.get("left", 0), removals.get("right", 0)
    assert removed["left.weight"] == 9 * (6 * stem_out + left_out * (8 - stem_out))
    assert removed["right.weight"] == 4 * stem_out + right_out * (8 - stem_out)
    assert stem_out and left_out + right_out
    assert removed["head.weight"] == 5 * (left_out + right_out)  # the Linear subclass's input columns
    assert type(twin.head) is not nn.Linear and isinstance(twin.head, nn.Linear)


def test_the_twin_of_a_plan_given_with_its_model_and_of_a_model_pruned_twice() -> None:
    model = user_net()
    x = inputs()
    first = sec.prune(model, "l1-filter", 0.3, example_inputs=x[:2])
    twin = sec.masked_equivalent(model, first.plan.to_json(), example_inputs=x[:2])
    with torch.no_grad():
        assert (twin(x) - first.model.eval()(x)).abs().max().item() <= 1e-5
    second = sec.prune(first.model, "l2-filter", 0.3, example_inputs=x[:2])
    assert_twin(second, x)  # second's plan starts with first's steps: only the new ones are masked


def test_the_twin_of_hap_with_implants() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 8, 8), 5).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)
    x = inputs((1, 8, 8), 16)
    batches = [(x, torch.arange(16) % 5)]
    result = sec.prune(model, "hap", 0.4, example_inputs=x[:2], data=batches, probes=3, implant_ratio=0.3)
    assert any(step.kind == "implant" for step in result.plan.steps)
    twin = assert_twin(result, x, implants=True)
    assert any(type(module).__name__ == "ImplantedConv2d" for module in twin.modules())


@needs_timm
@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet10t"])
def test_the_twin_of_a_timm_model(name: str) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5).eval()
    x = inputs((3, 64, 64), 3)
    result = sec.prune(model, "l2-filter", 0.3, example_inputs=x[:2])
    assert_twin(result, x)


def test_masked_equivalent_refuses_what_has_no_plan_and_plans_of_another_model() -> None:
    x = inputs()
    masked = sec.prune(user_net(), "magnitude", 0.5, example_inputs=x[:2])
    with pytest.raises(UsageError, match="the result of 'magnitude' has no structured plan; its model is already"):
        sec.masked_equivalent(masked)
    plan = sec.prune(user_net(), "l2-filter", 0.4, example_inputs=x[:2]).plan
    with pytest.raises(UsageError, match=r"needs the plan .* and a batch to trace the model with"):
        sec.masked_equivalent(user_net(), plan)
    other = build_model("resnet8", (3, 12, 12), 5)
    with pytest.raises(
        StructureError,
        match=r"plan step 0: '[a-z]+' is not the root of a channel group of this model \(roots: classifier, ",
    ):
        sec.masked_equivalent(other, plan, example_inputs=x[:2])


@needs_onnx
def test_export_a_prune_result_a_run_directory_and_a_loaded_run(tmp_path: Path) -> None:
    import onnxruntime

    x = inputs()
    result = sec.prune(user_net(), "l2-filter", 0.4, example_inputs=x[:2])
    summary = sec.export(result, format="onnx", path=tmp_path / "result.onnx")
    assert summary["format"] == "onnx" and summary["out"] == str(tmp_path / "result.onnx")
    assert summary["onnxruntime_max_abs_error"] <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "result.onnx"), providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert abs(found - result.model.eval()(x).numpy()).max() <= 1e-4
    assert json.loads(summary["metadata"]["secateurs.model"])["name"] == "custom"

    run_dir = sec.save(result, tmp_path / "run")
    with pytest.raises(UsageError, match="cannot rebuild its model: unknown model 'custom'"):
        sec.export(run_dir, "onnx", tmp_path / "x.onnx")  # a custom model needs its factory
    loaded = sec.load(run_dir, model_factory=user_net)
    packed = sec.export(loaded, "packed")  # beside the run, with the format's suffix
    assert packed["out"] == str(tmp_path / "run.packed") and packed["verified"] == "bit-identical"
    again = sec.export(loaded, "onnx", tmp_path / "loaded.onnx")
    assert again["onnxruntime_max_abs_error"] <= 1e-4
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_a_result_without_a_path_and_bad_options(tmp_path: Path) -> None:
    result = sec.prune(user_net(), "magnitude", 0.5, example_inputs=inputs()[:2])
    with pytest.raises(UsageError, match="a PruneResult has no run directory to write beside; pass path="):
        sec.export(result, "packed")
    with pytest.raises(ConfigError, match=r"export format 'packed' options: .*colour"):
        sec.export(result, "packed", tmp_path / "p", colour="red")
    with pytest.raises(UsageError, match="unknown export format 'zip'"):
        sec.export(result, "zip", tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_save_with_an_external_reference_loads_and_exports_without_a_factory(tmp_path: Path) -> None:
    factory_file = tmp_path / "net.py"
    source = "\n\n".join(inspect.getsource(cls) for cls in (Head, UserNet))
    factory_file.write_text(f"import torch\nfrom torch import nn\n\n{source}\n\ndef make():\n    return UserNet()\n")
    x = inputs()
    result = sec.prune(user_net(), "l2-filter", 0.4, example_inputs=x[:2])
    run_dir = sec.save(result, tmp_path / "run", model_name=f"{factory_file}:make")
    recorded = json.loads((run_dir / "run.json").read_text())["model"]
    assert recorded["name"] == f"{factory_file}:make" and len(recorded["sha256"]) == 64
    loaded = sec.load(run_dir)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), result.model.eval()(x))
    packed = sec.export(run_dir, "packed")  # a run directory of an external model: rebuilt from run.json
    assert packed["out"] == str(tmp_path / "run.packed") and packed["verified"] == "bit-identical"
    with pytest.raises(UsageError, match="model_args are for external models"):
        sec.save(result, tmp_path / "zoo", model_name="lenet5", model_args={"width": 2})
