"""The project's own quality gates, run with the suite: ruff, mypy (strict, on all of gateway/),
the import contracts that keep each subject's pure part pure, and no import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    out = _run(sys.executable, "-m", "ruff", "check", "gateway", "tests", "benchmarks", "fuzz")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean_and_strict_on_the_core() -> None:
    out = _run(sys.executable, "-m", "mypy", "gateway")
    assert out.returncode == 0, out.stdout + out.stderr


def test_core_imports_no_adapter_and_no_io_library() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed")
    out = _run(exe)
    assert out.returncode == 0, out.stdout + out.stderr


def test_gateway_has_no_import_cycles() -> None:
    """Module-level and function-local imports alike (import-linter's `acyclic_siblings`)."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed")
    out = _run(exe, "--contract", "acyclic")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No import cycles" in out.stdout and "KEPT" in out.stdout
