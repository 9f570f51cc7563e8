"""report.html rendered by headless Chromium from disk: not blank, plots decoded, the results table in the DOM.

Chromium (the Debian package ``chromium``) is installed by ``scripts/ensure-chromium.sh``, which
``make test`` runs first; this test installs nothing and fails (never skips) when it is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from secateurs.bench.plots import SMALL
from secateurs.bench.report import ReportOptions, write_report

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def fixtures() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "unit" / "bench" / "report_fixtures.py"
    spec = importlib.util.spec_from_file_location("report_fixtures_for_chromium", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEBIAN_PATH = Path("/usr/bin/chromium")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and DEBIAN_PATH.exists():
        found = str(DEBIAN_PATH)
    if found is None:
        pytest.fail(
            "chromium is not installed: run scripts/ensure-chromium.sh (installs the Debian package chromium; "
            "make test runs it) and re-run this test"
        )
    return found


def run_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def screenshot(binary: str, page: Path, image: Path, profile: Path) -> np.ndarray:
    result = run_chromium(binary, profile, f"--screenshot={image}", "--window-size=1200,2000", page.as_uri())
    assert image.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return np.asarray(Image.open(image).convert("RGB")).astype(np.int64)


def colourful(pixels: np.ndarray) -> int:
    """Pixels whose channels differ by more than 100 (plot lines and markers; text is grey or black)."""
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 100).sum())


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    module = fixtures()
    directory = module.write_bench_dir(tmp_path / "bench", module.fixture_rows(seeds=(0, 1)))
    write_report(directory, ReportOptions(style=SMALL))
    page = directory / "report.html"

    pixels = screenshot(binary, page, tmp_path / "page.png", tmp_path / "profile")
    assert pixels.shape == (2000, 1200, 3)
    assert pixels.var() > 300, "the screenshot is (nearly) uniform: the page rendered blank"
    inked = (pixels.min(axis=2) < 200).mean()
    assert 0.01 < inked < 0.9, f"{inked:.3f} of the pixels are dark"

    # The same page with its images removed: the embedded PNGs are what adds the colour.
    bare = directory / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', page.read_text()))
    without_images = screenshot(binary, bare, tmp_path / "bare.png", tmp_path / "profile")
    assert colourful(pixels) > colourful(without_images) + 300, "the embedded plots did not render"

    dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"\s+", " ", dom.stdout)
    accuracy = 100 * (module.accuracy(0.99, 0, 0.01) + module.accuracy(0.99, 1, 0.01)) / 2
    assert f"<td>mlp</td><td>lap</td><td>0.99</td><td>2</td><td>{accuracy:.2f} ± 0.14</td>" in text
    assert text.count('<img alt="') == 6
    assert "Machine that rendered this report" in text


def test_missing_chromium_fails_and_names_the_installer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys.modules[__name__], "DEBIAN_PATH", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match=r"scripts/ensure-chromium\.sh"):
        chromium()
