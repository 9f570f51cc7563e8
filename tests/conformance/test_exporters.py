"""Invariants every registered export format must satisfy, on a masked, a structured and a window-masked run.

Parametrized over the exporter registry: a format added later is exported from each kind of run
here. For every (format, run) the export either succeeds — writes ``out`` and nothing else beside
it, returns a JSON-able summary, and its artifact reloads to the run's outputs where the format has
a reader — or refuses in one line with a secateurs error, leaving nothing behind. Every format must
export at least one kind of run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.deploy.csr_file import load_csr_model
from secateurs.deploy.export_onnx import onnxruntime_session
from secateurs.deploy.export_packed import read_packed
from secateurs.deploy.exporters import load_exporters
from secateurs.errors import SecateursError
from secateurs.models import build_model
from secateurs.runs.directory import LoadedRun, load_run
from secateurs.sparsity.masks import plain_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

FORMATS = load_exporters().names()
RUNS = {
    "magnitude": {"method": "magnitude", "sparsity": 0.9},
    "l2-filter": {"method": "l2-filter", "sparsity": 0.3},
    "window": {"method": "magnitude", "sparsity": 0.5, "granularity": "window", "exclude": ["hidden.*", "classifier*"]},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-conformance")
    inputs = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    made = {}
    for name, settings in RUNS.items():
        torch.manual_seed(0)
        model = build_model("lenet5", (1, 28, 28), 10)
        settings = dict(settings)
        result = sec.prune(model, settings.pop("method"), settings.pop("sparsity"), example_inputs=inputs, **settings)
        made[name] = sec.save(result, root / name, model_name="lenet5", num_classes=10)
    return made


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def check_reload(format_name: str, artifact: Path, run: LoadedRun) -> None:
    """The artifact reproduces the run where the format has a reader: outputs (onnx, csr) or weights (packed)."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    if format_name == "onnx":
        session = onnxruntime_session(artifact)
        exported = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(exported, outputs(run.model, x), rtol=1e-4, atol=1e-4)
    elif format_name == "csr":
        torch.testing.assert_close(
            outputs(load_csr_model(artifact).model, x), outputs(run.model, x), rtol=1e-4, atol=1e-5
        )
    elif format_name == "packed":
        state, masks, _ = read_packed(artifact)
        for name, value in plain_state_dict(run.model).items():
            assert torch.equal(state[name], value), name
        for name, mask in (run.masks.state_dict() if run.masks is not None else {}).items():
            assert torch.equal(masks[name], mask.bool()), name


@pytest.mark.parametrize("format_name", FORMATS)
@pytest.mark.parametrize("kind", list(RUNS))
def test_an_export_succeeds_completely_or_refuses_in_one_line(
    format_name: str, kind: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    exporter = load_exporters().get(format_name)
    out = tmp_path / f"model{exporter.suffix}"
    loaded = load_run(runs[kind])
    try:
        summary = exporter.run(loaded, out)
    except SecateursError as error:
        assert "\n" not in str(error)
        assert list(tmp_path.iterdir()) == [], "a refused export leaves nothing behind"
        return
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == [out.name], "only the artifact is written"
    json.dumps(summary)  # JSON-able
    check_reload(format_name, out, loaded)


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_format_exports_some_kind_of_run(format_name: str, runs: dict[str, Path], tmp_path: Path) -> None:
    exporter = load_exporters().get(format_name)
    exported = []
    for kind, path in runs.items():
        try:
            exporter.run(load_run(path), tmp_path / f"{kind}{exporter.suffix}")
        except SecateursError:
            continue
        exported.append(kind)
    assert exported, f"format {format_name!r} exported none of {', '.join(runs)}"
