"""The package as a user installs it: a wheel in a fresh virtual environment, without the extras.

The environment reuses the torch already installed here (a CUDA user keeps their build): a ``.pth``
file exposes only the distributions the wheel's own metadata requires (``Requires-Dist`` without
extras, followed recursively), so pip's resolver must find every runtime dependency and nothing of the
``onnx`` or ``report`` extras is importable. From the installed console script, LeNet-5 trains for one
step and is pruned; the commands that need a missing extra say in one line which ``pip install`` brings it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def requirement_name(requirement: str) -> str | None:
    """The distribution a ``Requires-Dist`` line names, or None when it only applies to an extra."""
    if "extra ==" in requirement.replace("extra==", "extra =="):
        return None
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else None


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need, their own requirements included (extras excluded)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement guarded by a marker that does not apply here
        seen[key] = distribution
        for requirement in distribution.requires or []:
            marker = requirement.partition(";")[2]
            if marker and ("extra" in marker or "sys_platform == \"win32\"" in marker):
                continue
            required = requirement_name(requirement)
            if required is not None:
                todo.append(required)
    return list(seen.values())


def expose(distributions: list[metadata.Distribution], target: Path) -> None:
    """Symlink every top-level file or package (and the dist-info) of ``distributions`` into ``target``."""
    target.mkdir()
    for distribution in distributions:
        base = Path(str(distribution.locate_file("")))
        tops = {Path(str(file)).parts[0] for file in distribution.files or [] if not str(file).startswith("..")}
        for top in tops:
            source = base / top
            if source.exists() and not (target / top).exists() and not top.endswith(".pth"):
                (target / top).symlink_to(source)


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_the_wheel_installs_without_extras_and_trains_and_prunes(tmp_path: Path) -> None:
    source = tmp_path / "source"  # built from a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        dict(os.environ),
        tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("secateurs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    runtime = [
        name
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
        for name in [requirement_name(line.removeprefix("Requires-Dist:"))]
        if name is not None
    ]
    assert "torch" in runtime and "onnx" not in runtime and "matplotlib" not in runtime
    assert re.search(r"Requires-Dist: torch>=2\.11\s*$", text, re.MULTILINE), "torch is a range, not a pin"

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], dict(os.environ), tmp_path).returncode == 0
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([str(python), "-c", purelib], {}, tmp_path).stdout.strip())
    shared = tmp_path / "shared-site"
    expose(closure(runtime), shared)
    (site / "_reused_torch.pth").write_text(f"{shared}\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "-q", str(wheel)], env, tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    where = run([str(python), "-c", "import secateurs, torch; print(secateurs.__file__)"], env, tmp_path)
    assert where.returncode == 0 and str(site) in where.stdout, where.stdout + where.stderr
    for extra_module in ("onnx", "onnxruntime", "matplotlib"):
        probe = run([str(python), "-c", f"import {extra_module}"], env, tmp_path)
        assert probe.returncode != 0, f"{extra_module} leaked into the environment without extras"

    secateurs = str(venv / "bin" / "secateurs")
    common = ["--no-latency", "--seed", "0"]
    trained = run(
        [secateurs, "--threads", "1", "train", "--model", "lenet5", "--data", "synthetic", "--epochs", "1",
         "--batch-size", "64", "--train-subset", "64", "--out", str(tmp_path / "dense"), *common],
        env,
        tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    pruned = run(
        [secateurs, "--threads", "1", "prune", "--from", str(tmp_path / "dense"), "--method", "magnitude",
         "--sparsity", "0.5", "--finetune-epochs", "1", "--finetune-batch-size", "64", "--train-subset", "64",
         "--out", str(tmp_path / "pruned"), *common],
        env,
        tmp_path,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert (tmp_path / "pruned" / "masks.safetensors").is_file()

    exported = run([secateurs, "export", str(tmp_path / "pruned"), "--format", "onnx"], env, tmp_path)
    assert exported.returncode == 2
    lines = [line for line in exported.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'secateurs[onnx]'" in lines[0], exported.stderr
    report = run([secateurs, "report", str(tmp_path)], env, tmp_path)
    assert report.returncode == 2 and "pip install 'secateurs[report]'" in report.stderr, report.stderr
