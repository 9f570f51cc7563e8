"""The measured tables in README.md and docs/*.md are exactly what `scripts/readme_tables.py` regenerates
from the committed results (no table typed by hand, none left stale after new results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_committed_tables_equal_the_regenerated_ones() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_every_table_block_names_a_generator() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in readme_tables.BLOCK.finditer(path.read_text()):
            assert match.group("name") in readme_tables.GENERATORS, (path.name, match.group("name"))
