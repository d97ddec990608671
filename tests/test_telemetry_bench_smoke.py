"""`python3 -m benchmarks.telemetry` still runs (the agent part, a few ticks; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_agent_benchmark_runs_and_reports_its_cost(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.telemetry", "--agent-only", "--quick", "--json",
                          str(tmp_path / "out.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "out.json").read_text())["agent"]
    assert result["samples"] == 8 * result["ticks"] and result["cpu_us_per_sample"] > 0
    assert "µs CPU per sample" in out.stdout
