"""The soak command (`python3 -m benchmarks.soak`) runs end to end: a short, slow smoke run.

Its figures are not asserted (the machine is shared); its checks are: no errors, expected
verdicts, the ledger equal to the live workloads, the audit chain and checkpoints valid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from postgres_server import _bin_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_short_soak_passes_every_check() -> None:
    if _bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries")
    out = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--minutes", "0.1", "--rate", "20"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    checks = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    names = {line.split("  ")[1].strip() for line in checks}
    assert {"no errors", "expected verdicts", "ledger = live workloads", "audit chain"} <= names
    assert all(line.startswith("PASS") for line in checks)
    assert any(line.startswith("replica-1") for line in lines) and any(line.startswith("replica-2") for line in lines)
    assert lines[-1] == "soak passed"
