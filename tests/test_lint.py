"""The code stays ruff- and mypy --strict-clean: checked like any other test."""

from __future__ import annotations

import subprocess
import sys

from tests.listd_env import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "listd", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run("mypy", "listd")
    assert result.returncode == 0, result.stdout + result.stderr
