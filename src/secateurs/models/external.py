"""Models from outside the zoo: timm architectures, Python factories and model files.

Wherever secateurs takes a model name (``--model``, a recipe's ``model:``, a suite's ``models``
entries, `secateurs.api.train_run`) it also takes a *reference* to a model it does not ship:

``timm:NAME``
    ``timm.create_model(NAME, pretrained=False, num_classes=K, in_chans=C, **args)``, where K and C
    come from the data unless the model args set them (``pip install 'secateurs[timm]'``). Weights are
    never downloaded: ``pretrained=True`` and ``checkpoint_path`` are refused.
``python:package.module:factory``
    ``factory(**args)`` from an importable module (installed, or on ``PYTHONPATH``).
``path/to/file.py:factory``
    ``factory(**args)`` from a Python file, executed as a module of its own (its directory is on
    ``sys.path`` while it is imported and while the factory runs, so it may import files beside it).

A factory receives the model args as keywords, plus the data's shapes under the names its signature
declares and the args leave unset: ``num_classes`` (the class count), ``in_channels`` (C),
``image_size`` (H for square images, else ``(H, W)``) and ``input_shape`` (``(C, H, W)``). It must
return an ``nn.Module`` whose output, on one example batch, is a tensor of shape ``(batch, K)``:
`resolve_external` checks that with one forward pass in eval mode and names what it found otherwise.

What a run records to rebuild the model (`Provenance`): the reference and the args as given, the
absolute path and sha256 of a model file, timm's version. Rebuilding checks the file's hash against
the recorded one (a changed file is refused unless ``allow_changed``; the weights must fit either way).
Model args are JSON values (what run.json can hold); every failure is one `UsageError` line.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.runtime.extras import require

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
PYTHON_PREFIX = "python:"
FILE_SUFFIX = ".py"
EXTERNAL_FORMS = "timm:NAME, python:package.module:factory or path/to/file.py:factory"
"""How external models are named (for messages and `secateurs list models`)."""
DATA_ARGUMENTS = ("num_classes", "in_channels", "image_size", "input_shape")
"""Parameters a factory receives from the data when its signature names them and the args do not."""
TIMM_REFUSED = ("pretrained", "checkpoint_path", "pretrained_cfg_overlay")
"""timm arguments that download or unpickle weights: secateurs never does either."""
CHECK_BATCH = 2
CLOSE_MATCHES = 5


@dataclass(frozen=True)
class Provenance:
    """What identifies an external model beyond its reference (run.json's ``model`` records it).

    ``file`` and ``sha256``: the model file's absolute path and the hash of its bytes (file form);
    ``timm_version``: the timm that built it (timm form). Empty for zoo and ``python:`` models.
    """

    file: str | None = None
    sha256: str | None = None
    timm_version: str | None = None


@dataclass(frozen=True)
class ModelReference:
    """A model to build: a zoo name or an external reference, its model args, and what a run recorded.

    ``recorded`` is the `Provenance` of the run being rebuilt (None when a model is first built);
    ``allow_changed`` lets a model file whose hash differs from the recorded one be used anyway.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    recorded: Provenance | None = None
    allow_changed: bool = False


@dataclass
class BuiltModel:
    """A freshly built model and its `Provenance` (empty for a zoo model)."""

    module: nn.Module
    provenance: Provenance = field(default_factory=Provenance)


@dataclass(frozen=True)
class ExternalTarget:
    """A parsed external reference: its form, what it names (timm model, module or file) and the factory."""

    form: Literal["timm", "python", "file"]
    target: str
    factory: str = ""


def as_reference(model: str | ModelReference) -> ModelReference:
    """``model`` as a `ModelReference` (a plain name gets no args)."""
    return model if isinstance(model, ModelReference) else ModelReference(model)


def parse_reference(name: str) -> ExternalTarget | None:
    """The external reference ``name`` spells, or None for a zoo name; a malformed one is a `UsageError`."""
    if name.startswith(TIMM_PREFIX):
        target = name[len(TIMM_PREFIX) :].strip()
        if not target:
            raise UsageError(f"model {name!r}: name the timm architecture, e.g. timm:resnet18")
        return ExternalTarget("timm", target)
    if name.startswith(PYTHON_PREFIX):
        module, sep, factory = name[len(PYTHON_PREFIX) :].rpartition(":")
        if not sep or not _is_dotted_name(module) or not factory.isidentifier():
            raise UsageError(f"model {name!r}: expected python:package.module:factory (a factory function name)")
        return ExternalTarget("python", module, factory)
    path, sep, factory = name.rpartition(":")
    if sep and path.endswith(FILE_SUFFIX):
        if not factory.isidentifier():
            raise UsageError(f"model {name!r}: expected path/to/file.py:factory (a factory function name)")
        return ExternalTarget("file", path, factory)
    if name.endswith(FILE_SUFFIX):
        raise UsageError(f"model {name!r}: name the factory in the file too, e.g. {name}:build_model")
    return None


def is_external(name: str) -> bool:
    """Whether ``name`` is an external reference (timm:, python:, FILE.py:) rather than a zoo name."""
    return parse_reference(name) is not None


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def check_model_args(args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``args`` as a plain dict if every key is an identifier and every value a JSON value; else `UsageError`."""
    checked: dict[str, Any] = {}
    for key, value in args.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise UsageError(f"{where}: model arg {key!r} is not a keyword name (letters, digits, '_')")
        if not _is_json(value):
            raise UsageError(
                f"{where}: model arg {key}={value!r} is not a JSON value (numbers, strings, booleans, "
                "null, lists and mappings of those)"
            )
        checked[key] = value
    return checked


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json(item) for key, item in value.items())
    return False


def resolve_external(
    reference: ModelReference, target: ExternalTarget, input_shape: tuple[int, ...], num_classes: int
) -> BuiltModel:
    """Build the external model ``reference`` names for inputs of ``input_shape`` and ``num_classes``.

    Returns the module (default initialisation, train mode) and its `Provenance`. Checks that the
    factory returns an ``nn.Module`` and that one forward pass on a zero batch of ``input_shape`` (eval
    mode, no gradients; the train/eval flags are restored) gives a ``(batch, num_classes)`` tensor.
    Every failure is a `UsageError` naming the reference: an unknown timm name (with close matches), a
    missing module, file or factory, a file whose hash differs from ``reference.recorded`` (unless
    ``reference.allow_changed``), a factory that raises or returns something else, a bad output.
    """
    name = reference.name
    args = check_model_args(reference.args, f"model {name!r}")
    if target.form == "timm":
        module, provenance = _build_timm(name, target.target, args, input_shape, num_classes)
    else:
        directory: Path | None = None
        if target.form == "file":
            factory, provenance, directory = _file_factory(reference, target)
        else:
            factory, provenance = _module_factory(name, target), Provenance()
        with _on_path(directory):
            module = _call_factory(name, factory, args, input_shape, num_classes)
    check_output(module, name, input_shape, num_classes)
    return BuiltModel(module, provenance)


def check_reference(reference: ModelReference) -> None:
    """Resolve ``reference`` as far as possible without building it: the timm name, or module/file and factory.

    For suites and recipes to refuse a bad reference before anything trains; a `UsageError` otherwise.
    """
    target = parse_reference(reference.name)
    if target is None:
        return
    check_model_args(reference.args, f"model {reference.name!r}")
    if target.form == "timm":
        _timm_module(reference.name, target.target)
    elif target.form == "python":
        _module_factory(reference.name, target)
    else:
        _file_factory(reference, target)


# ----------------------------------------------------------------------------------------------- timm
def _timm_module(name: str, architecture: str) -> Any:
    timm = require("timm", f"--model {name}")
    if not timm.is_model(architecture):
        known = timm.list_models()
        close = difflib.get_close_matches(architecture, known, n=CLOSE_MATCHES, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else f"none of timm's {len(known)} names is close"
        raise UsageError(f"unknown timm model {architecture!r} ({hint}); timm.list_models() lists them all")
    return timm


def _build_timm(
    name: str, architecture: str, args: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> tuple[nn.Module, Provenance]:
    timm = _timm_module(name, architecture)
    refused = [key for key in TIMM_REFUSED if args.get(key)]
    if refused:
        raise UsageError(
            f"model {name!r}: {', '.join(refused)} would download or unpickle weights, which secateurs never "
            "does; build the architecture (pretrained=False) and train it, or load weights in Python first"
        )
    keywords = {"num_classes": num_classes, "in_chans": input_shape[0], **args, "pretrained": False}
    try:
        module = timm.create_model(architecture, **keywords)
    except Exception as error:
        raise UsageError(
            f"model {name!r}: timm.create_model({_call_text(architecture, keywords)}) failed: {_first_line(error)}"
        ) from error
    return module, Provenance(timm_version=str(getattr(timm, "__version__", "unknown")))


# -------------------------------------------------------------------------------- modules and files
def _module_factory(name: str, target: ExternalTarget) -> Callable[..., Any]:
    try:
        module = importlib.import_module(target.target)
    except ModuleNotFoundError as error:
        missing = error.name or target.target
        if target.target == missing or target.target.startswith(f"{missing}."):
            raise UsageError(
                f"model {name!r}: no module named {target.target!r} (is it installed, or its directory on PYTHONPATH?)"
            ) from None
        raise UsageError(f"model {name!r}: importing {target.target} failed: {_first_line(error)}") from error
    except Exception as error:
        raise UsageError(f"model {name!r}: importing {target.target} failed: {_first_line(error)}") from error
    return _factory_of(name, module, target.factory, f"module {target.target}")


def _file_factory(reference: ModelReference, target: ExternalTarget) -> tuple[Callable[..., Any], Provenance, Path]:
    """The factory in the model file, the file's provenance and its directory (for its own imports)."""
    name, recorded = reference.name, reference.recorded
    path = _model_file(name, target.target, recorded)
    try:
        source = path.read_bytes()
    except OSError as error:
        raise UsageError(f"model {name!r}: cannot read {path}: {error.strerror or error}") from None
    digest = hashlib.sha256(source).hexdigest()
    if recorded is not None and recorded.sha256 is not None and recorded.sha256 != digest:
        change = f"{path} changed since the run was made (sha256 {recorded.sha256[:12]}… recorded, {digest[:12]}… now)"
        if not reference.allow_changed:
            raise UsageError(f"{change}; pass --allow-changed-model (allow_changed_model=True) to use it anyway")
        log.warning("model %s: %s; using it anyway (its weights must still fit)", name, change)
    module_name = f"secateurs_model_file_{digest[:16]}"
    module = sys.modules.get(module_name)
    if module is None:
        module = _execute_file(name, path, source, module_name)
    provenance = Provenance(file=str(path), sha256=digest)
    return _factory_of(name, module, target.factory, f"file {path}"), provenance, path.parent


def _model_file(name: str, written: str, recorded: Provenance | None) -> Path:
    """The model file to read: the recorded absolute path, else the path as written (relative to the cwd)."""
    candidates = [Path(recorded.file)] if recorded is not None and recorded.file is not None else []
    candidates.append(Path(written).expanduser())
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shown = list(dict.fromkeys(str(candidate) for candidate in candidates))
    if len(shown) == 1:
        raise UsageError(f"model {name!r}: the model file {shown[0]} does not exist")
    raise UsageError(f"model {name!r}: the model file is gone: neither {shown[0]} (recorded) nor {shown[1]} exists")


def _execute_file(name: str, path: Path, source: bytes, module_name: str) -> Any:
    """Run ``source`` (the bytes of ``path``) as the module ``module_name``, registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:  # pragma: no cover - a .py path always gets a spec
        raise UsageError(f"model {name!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling-free helpers resolve the module through it
    try:
        code = compile(source, str(path), "exec")
        with _on_path(path.parent):
            exec(code, module.__dict__)
    except Exception as error:
        del sys.modules[module_name]
        raise UsageError(f"model {name!r}: running {path} failed: {_first_line(error)}") from error
    return module


def _factory_of(name: str, module: Any, factory: str, where: str) -> Callable[..., Any]:
    function = getattr(module, factory, None)
    if function is None:
        names = [key for key, value in vars(module).items() if callable(value) and not key.startswith("_")]
        close = difflib.get_close_matches(factory, names, n=CLOSE_MATCHES)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise UsageError(f"model {name!r}: {where} has no {factory!r}{hint}")
    if not callable(function):
        raise UsageError(f"model {name!r}: {factory!r} in {where} is not callable ({type(function).__name__})")
    return function


@contextlib.contextmanager
def _on_path(directory: Path | None) -> Iterator[None]:
    """``directory`` first on ``sys.path`` for the block (a model file's own imports), then as before."""
    if directory is None:
        yield
        return
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _call_factory(
    name: str, factory: Callable[..., Any], args: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    keywords = {**data_arguments(factory, input_shape, num_classes, set(args)), **args}
    try:
        module = factory(**keywords)
    except Exception as error:
        call = _call_text(getattr(factory, "__name__", "factory"), keywords, positional=False)
        raise UsageError(f"model {name!r}: {call} raised {_first_line(error)}") from error
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"model {name!r}: the factory returned {_describe(module)}, not a torch.nn.Module; "
            "accepted: a factory that returns the model"
        )
    return module


def data_arguments(
    factory: Callable[..., Any], input_shape: tuple[int, ...], num_classes: int, given: set[str]
) -> dict[str, Any]:
    """The data's shapes under the `DATA_ARGUMENTS` names ``factory``'s signature declares (not in ``given``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    height, width = (input_shape[1], input_shape[-1]) if len(input_shape) >= 2 else (None, None)
    values: dict[str, Any] = {
        "num_classes": num_classes,
        "in_channels": input_shape[0],
        "image_size": height if height == width else (height, width),
        "input_shape": tuple(input_shape),
    }
    accepted = {
        key
        for key, parameter in parameters.items()
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {key: values[key] for key in DATA_ARGUMENTS if key in accepted and key not in given}


# ----------------------------------------------------------------------------------------- the check
def check_output(module: nn.Module, name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """One forward pass on zeros of ``(CHECK_BATCH, *input_shape)`` in eval mode: the output must be a
    ``(CHECK_BATCH, num_classes)`` tensor. A `UsageError` says what was returned or raised. The module's
    train/eval flags are restored; nothing else changes (no gradients are taken)."""
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    example = torch.zeros((CHECK_BATCH, *input_shape), device=device)
    flags = {child: child.training for child in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            output = module(example)
    except Exception as error:
        raise UsageError(
            f"model {name!r}: its forward pass on an example batch of shape {tuple(example.shape)} failed: "
            f"{_first_line(error)}"
        ) from error
    finally:
        for child, training in flags.items():
            child.training = training
    if not isinstance(output, torch.Tensor):
        raise UsageError(
            f"model {name!r} returned {_describe(output)} for an input batch, not a tensor; secateurs needs "
            "the logits as one (batch, classes) tensor: wrap the model so that forward returns them"
        )
    if tuple(output.shape) != (CHECK_BATCH, num_classes):
        raise UsageError(
            f"model {name!r} returned a tensor of shape {tuple(output.shape)} for a batch of {CHECK_BATCH}; "
            f"expected ({CHECK_BATCH}, {num_classes}): one logit per class of the data"
        )


def _describe(value: Any) -> str:
    """A short description of a returned value: its type, and the shapes of tensors inside a container."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        items = ", ".join(
            f"tensor {tuple(item.shape)}" if isinstance(item, torch.Tensor) else type(item).__name__
            for item in value[:4]
        )
        more = ", …" if len(value) > 4 else ""
        return f"a {type(value).__name__} of {len(value)} ({items}{more})"
    if isinstance(value, dict):
        keys = ", ".join(repr(key) for key in list(value)[:4])
        return f"a dict with keys {keys}{', …' if len(value) > 4 else ''}"
    return "None" if value is None else f"a {type(value).__name__}"


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _call_text(function: str, keywords: Mapping[str, Any], *, positional: bool = True) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in keywords.items())
    if positional:
        return f"{function!r}, {arguments}" if arguments else repr(function)
    return f"{function}({arguments})"
