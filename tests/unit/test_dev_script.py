"""`python3 dev.py`, the entry point of a fresh clone: a mistyped command is
refused at once, before a virtual environment is created or anything is
installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_mistyped_command_is_refused_before_anything_is_installed(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("dev.py", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    result = subprocess.run([sys.executable, "dev.py", "dmeo"], cwd=clone, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("unknown command 'dmeo'; choose one of: demo, test, bench")
    assert "Creating .venv" not in result.stderr and "Installing" not in result.stderr
    assert not (clone / ".venv").exists()
