"""The Kubernetes API test double (tests/k8s_api_double.py) in a process of its own, seeded
with one scheduler-benchmark scenario (benchmarks/scheduler.py):

    python3 -m benchmarks.api_double gang 4096      # one gated 4,096-pod gang
    python3 -m benchmarks.api_double rebuild 100000  # 100,000 pods for the ledger rebuild

It prints its URL on one line once seeded, then serves until its stdin closes (the parent
exits or closes the pipe), so the API server's CPU is not the controller's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve(scenario: str, pods: int) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from k8s_api_double import FakeApiServer

    from benchmarks.scheduler import seed_gang, seed_rebuild

    double = FakeApiServer()
    {"gang": seed_gang, "rebuild": seed_rebuild}[scenario](double, pods)
    print(double.start(), flush=True)
    sys.stdin.read()  # until the parent closes the pipe
    double.stop()


@dataclass(frozen=True)
class Double:
    url: str
    pid: int

    def cpu_s(self) -> float | None:
        """CPU time the double's process has used so far (None where /proc is not there)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(scenario: str, pods: int) -> Iterator[Double]:
    """Start the double for `scenario` in a child process; yield it; stop it on exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.api_double", scenario, str(pods)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(REPO))
    assert process.stdin is not None and process.stdout is not None
    try:
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the API server double did not start (exit {process.wait(timeout=30)})")
        yield Double(url, process.pid)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
