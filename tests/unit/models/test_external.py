"""External model references: parsing, building timm / Python / file models, and every bad input."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from user_models import write_model_file

from secateurs.errors import UsageError
from secateurs.models import ModelReference, Provenance, build_model, check_model, is_external, resolve_model
from secateurs.models.external import ExternalTarget, parse_reference
from secateurs.runtime.extras import available

pytestmark = pytest.mark.usefixtures("one_thread")
needs_timm = pytest.mark.skipif(not available("timm"), reason="timm is not installed (pip install 'secateurs[timm]')")
SHAPE = (3, 64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("timm:resnet18", ExternalTarget("timm", "resnet18")),
        ("python:my_pkg.nets:build", ExternalTarget("python", "my_pkg.nets", "build")),
        ("models/net.py:make", ExternalTarget("file", "models/net.py", "make")),
        ("/abs/dir/net.py:make", ExternalTarget("file", "/abs/dir/net.py", "make")),
        ("lenet5", None),
        ("resnet20", None),
    ],
)
def test_references_parse_into_their_form(name: str, expected: ExternalTarget | None) -> None:
    assert parse_reference(name) == expected
    assert is_external(name) == (expected is not None)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("timm:", "name the timm architecture"),
        ("python:nets", "expected python:package.module:factory"),
        ("python:my-pkg.nets:build", "expected python:package.module:factory"),
        ("net.py:3make", "expected path/to/file.py:factory"),
        ("models/net.py", "name the factory in the file too, e.g. models/net.py:build_model"),
    ],
)
def test_malformed_references_are_one_line_each(name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_reference(name)


def test_an_unknown_zoo_name_says_how_external_models_are_named() -> None:
    with pytest.raises(UsageError) as caught:
        build_model("resnet-20", SHAPE, 10)
    assert "unknown model 'resnet-20'; accepted: " in str(caught.value)
    assert "or an external model: timm:NAME, python:package.module:factory or path/to/file.py:factory" in str(
        caught.value
    )


def test_zoo_models_take_no_model_args() -> None:
    with pytest.raises(UsageError, match="'lenet5' is a zoo model and takes no model args \\(got width\\)"):
        build_model("lenet5", (1, 28, 28), 10, args={"width": 2})


# ------------------------------------------------------------------------------------------------ timm
@needs_timm
def test_timm_models_get_classes_and_channels_from_the_data_and_record_timm_version() -> None:
    import timm

    torch.manual_seed(0)
    built = resolve_model(ModelReference("timm:resnet10t", {"drop_rate": 0.25}), (1, 64, 64), 7)
    assert built.provenance == Provenance(timm_version=timm.__version__)
    assert built.module.conv1[0].in_channels == 1  # in_chans from the data
    assert built.module.get_classifier().out_features == 7
    assert built.module.drop_rate == 0.25
    assert built.module.training  # the output check restores the train/eval flags
    with torch.no_grad():
        assert built.module.eval()(torch.zeros(3, 1, 64, 64)).shape == (3, 7)


@needs_timm
def test_an_unknown_timm_name_lists_close_matches() -> None:
    with pytest.raises(UsageError) as caught:
        build_model("timm:resnt10t", SHAPE, 10)
    message = str(caught.value)
    assert message.startswith("unknown timm model 'resnt10t' (close matches: ")
    assert "resnet10t" in message and "\n" not in message


@needs_timm
@pytest.mark.parametrize("args", [{"pretrained": True}, {"checkpoint_path": "weights.pth"}])
def test_timm_weights_are_never_downloaded_or_unpickled(args: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="would download or unpickle weights, which secateurs never does"):
        build_model("timm:resnet10t", SHAPE, 10, args=args)


@needs_timm
def test_a_timm_argument_the_architecture_does_not_take_names_the_call() -> None:
    with pytest.raises(UsageError) as caught:
        build_model("timm:resnet10t", SHAPE, 10, args={"img_size": 64})
    message = str(caught.value)
    assert "timm.create_model('resnet10t', num_classes=10, in_chans=3, img_size=64, pretrained=False) failed" in message
    assert "TypeError" in message and "img_size" in message


# ------------------------------------------------------------------------------------------ model files
def test_a_model_file_factory_gets_the_data_shapes_its_signature_names(tmp_path: Path) -> None:
    path = write_model_file(tmp_path / "models")
    built = resolve_model(ModelReference(f"{path}:make", {"width": 4}), SHAPE, 5)
    assert built.provenance == Provenance(
        file=str(path.resolve()), sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    first = built.module[0]
    assert isinstance(first, nn.Conv2d) and (first.in_channels, first.out_channels) == (3, 4)
    assert built.module[-1].out_features == 5 and type(built.module[-1]).__name__ == "Head"


def test_a_relative_model_file_is_found_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_model_file(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    built = resolve_model("models/user_net.py:make", SHAPE, 3)
    assert built.provenance.file == str((tmp_path / "models" / "user_net.py").resolve())


def test_a_changed_model_file_is_refused_unless_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_model_file(tmp_path)
    first = resolve_model(f"{path}:make", SHAPE, 3).provenance
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(UsageError) as caught:
        resolve_model(ModelReference(f"{path}:make", recorded=first), SHAPE, 3)
    assert f"{path.resolve()} changed since the run was made (sha256 {first.sha256[:12]}… recorded" in str(caught.value)
    assert "pass --allow-changed-model (allow_changed_model=True) to use it anyway" in str(caught.value)
    with caplog.at_level(logging.WARNING, logger="secateurs"):
        again = resolve_model(ModelReference(f"{path}:make", recorded=first, allow_changed=True), SHAPE, 3)
    assert again.provenance.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first.sha256
    assert "using it anyway (its weights must still fit)" in caplog.text


def test_a_recorded_model_file_that_moved_is_looked_for_where_it_was_named(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    old = write_model_file(tmp_path / "old")
    recorded = resolve_model(f"{old}:make", SHAPE, 3).provenance
    write_model_file(tmp_path / "new" / "models")
    old.unlink()
    monkeypatch.chdir(tmp_path / "new")
    built = resolve_model(ModelReference("models/user_net.py:make", recorded=recorded), SHAPE, 3)
    assert built.provenance.sha256 == recorded.sha256  # same bytes, found at the path as written
    (tmp_path / "new" / "models" / "user_net.py").unlink()
    with pytest.raises(
        UsageError, match=f"the model file is gone: neither {old} \\(recorded\\) nor models/user_net.py"
    ):
        resolve_model(ModelReference("models/user_net.py:make", recorded=recorded), SHAPE, 3)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("mkae", "has no 'mkae'; close matches: make"),
        ("NOT_A_FACTORY", "'NOT_A_FACTORY' in file .* is not callable \\(int\\)"),
        ("returns_dict", "the factory returned a dict with keys 'model', not a torch.nn.Module"),
        ("fails", "fails\\(num_classes=3\\) raised ValueError: no such width"),
        (
            "two_heads",
            "returned a tuple of 2 \\(tensor \\(2, 3\\), tensor \\(2, 3\\)\\) for an input batch, not a tensor",
        ),
    ],
)
def test_bad_factories_are_one_line_naming_what_was_found(tmp_path: Path, factory: str, message: str) -> None:
    path = write_model_file(tmp_path)
    with pytest.raises(UsageError, match=message) as caught:
        build_model(f"{path}:{factory}", SHAPE, 3)
    assert "\n" not in str(caught.value)


def test_outputs_of_the_wrong_width_and_failing_forwards_are_refused(tmp_path: Path) -> None:
    path = write_model_file(tmp_path)
    with pytest.raises(UsageError, match="returned a tensor of shape \\(2, 4\\) for a batch of 2; expected \\(2, 3\\)"):
        build_model(f"{path}:make", SHAPE, 3, args={"num_classes": 4})
    with pytest.raises(
        UsageError, match="its forward pass on an example batch of shape \\(2, 3, 32, 32\\) failed: RuntimeError"
    ):
        build_model(f"{path}:two_heads", (3, 32, 32), 3)  # a Linear sized for 64×64 inputs


def test_a_missing_model_file_and_a_file_that_fails_to_run(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"the model file {tmp_path}/absent.py does not exist"):
        build_model(f"{tmp_path}/absent.py:make", SHAPE, 3)
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(UsageError, match=r"running .*broken.py failed: ModuleNotFoundError: No module named"):
        build_model(f"{broken}:make", SHAPE, 3)


def test_model_args_must_be_json_values(tmp_path: Path) -> None:
    path = write_model_file(tmp_path)
    with pytest.raises(UsageError, match=r"model arg width=.* is not a JSON value"):
        build_model(f"{path}:make", SHAPE, 3, args={"width": object()})
    with pytest.raises(UsageError, match="model arg 'not a name' is not a keyword name"):
        build_model(f"{path}:make", SHAPE, 3, args={"not a name": 1})


# ----------------------------------------------------------------------------------- python: modules
PACKAGE = """
from torch import nn


def build(num_classes, input_shape, hidden=16):
    channels, height, width = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
"""


def test_python_factories_from_an_importable_module(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    package = tmp_path / "user_pkg_external"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    built = resolve_model(ModelReference("python:user_pkg_external.nets:build", {"hidden": 5}), (1, 8, 8), 3)
    assert built.provenance == Provenance()
    assert [layer.out_features for layer in built.module if isinstance(layer, nn.Linear)] == [5, 3]
    check_model("python:user_pkg_external.nets:build")
    with pytest.raises(UsageError, match=r"module user_pkg_external.nets has no 'bulid'; close matches: build"):
        check_model("python:user_pkg_external.nets:bulid")


def test_a_python_module_that_is_missing_or_fails_to_import(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match=r"no module named 'absent_pkg.nets' \(is it installed, or its directory"):
        build_model("python:absent_pkg.nets:build", SHAPE, 3)
    (tmp_path / "user_broken_module.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_broken_module", raising=False)
    with pytest.raises(UsageError, match="importing user_broken_module failed: RuntimeError: broken on import"):
        build_model("python:user_broken_module:build", SHAPE, 3)


def test_timm_models_without_timm_name_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from secateurs.runtime.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "timm", None)  # what an environment without timm imports
    with pytest.raises(MissingExtra) as caught:
        build_model("timm:resnet18", SHAPE, 10)
    assert (
        str(caught.value) == "--model timm:resnet18 needs timm, which is not installed: pip install 'secateurs[timm]'"
    )
