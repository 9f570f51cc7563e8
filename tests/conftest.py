"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TORCHVISION_STUBS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")
"""torchvision's compiled ops do not load against the CPU torch of this project's machines
(ENVIRONMENT.md); empty modules in their place let `import timm` work (every model definition is
usable; only torchvision's detection ops are not). Test scaffolding only, never in the package."""


def stub_torchvision_registrations() -> None:
    for name in TORCHVISION_STUBS:
        sys.modules.setdefault(name, ModuleType(name))


stub_torchvision_registrations()  # before any test module imports timm (directly or through secateurs)


SCRIPTS = BENCHMARKS.parent / "scripts"


def _load_benchmark(name: str, folder: Path = BENCHMARKS) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import the script ``benchmarks/NAME.py`` as a module (for its table and report functions)."""
    return _load_benchmark


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import the script ``scripts/NAME.py`` as a module."""
    return lambda name: _load_benchmark(name, SCRIPTS)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors in most tests are tiny, and two OpenMP threads on a busy
    2-core machine spin-wait each other into a many-fold slowdown. Restores the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- CLI helpers (shared)
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str, threads: int | None = None) -> tuple[int, str, str]:
    """Run ``secateurs --quiet ARGV`` in-process; returns (exit code, stdout, stderr).

    ``threads`` adds ``--threads N`` and restores torch's thread count afterwards.
    """
    from secateurs.cli import main

    previous = torch.get_num_threads()
    prefix = ["--quiet", *(["--threads", str(threads)] if threads is not None else [])]
    try:
        code = main([*prefix, *argv])
    finally:
        torch.set_num_threads(previous)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and exactly one ``secateurs: error:`` line on stderr containing every fragment."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("secateurs: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def assert_nothing_written(out: Path) -> None:
    """Neither the run directory nor its hidden staging directory exists."""
    from secateurs.runs.directory import partial_dir

    assert not out.exists()
    assert not partial_dir(out).exists()
