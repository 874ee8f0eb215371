"""The linters run with the tests, so a lint finding fails the test command as a test failure would.

ruff reads its rules from pyproject.toml ([tool.ruff]); every `noqa` names the code it silences
(PGH004), and one that silences nothing is itself a finding (RUF100).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
