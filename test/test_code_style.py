# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Lint and licence headers, as ROS 2 Python packages check them (ament_flake8, ament_pep257,
ament_copyright), here with ruff (config in ruff.toml) and a header check.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("seg_perception", "test", "benchmarks", "launch", "setup.py")
HEADER = ("# Copyright", "# SPDX-License-Identifier: Apache-2.0")


def _python_files() -> list[Path]:
    files = [REPO / "setup.py"]
    for folder in CHECKED[:-1]:
        files += sorted((REPO / folder).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def test_ruff_finds_nothing():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_python_file_has_the_licence_header():
    missing = []
    for path in _python_files():
        lines = path.read_text().splitlines()
        if lines and lines[0].startswith("#!"):
            lines = lines[1:]
        if len(lines) < 2 or not lines[0].startswith(HEADER[0]) or lines[1] != HEADER[1]:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"no licence header (first lines '{HEADER[0]} ...' and '{HEADER[1]}'): {missing}"
    assert len(_python_files()) > 50
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Apache-2.0" in (REPO / "package.xml").read_text()
