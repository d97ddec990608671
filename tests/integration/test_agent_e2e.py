"""End to end on loopback: `gpu-gateway agent --simulate` (a subprocess) → the real gateway over
TLS → stored samples → `gpuctl usage` and `gpuctl audit list --alerts`, through a refused
token, a gateway outage (the server stopped) and its recovery, with no sample lost."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import FIXTURES, POLICIES
from served import Served, api_token, start_server, stop_server
from telemetry_helpers import llm_admissions

from gateway.telemetry.alerts import COLLAPSE, GPU_ERRORS, IDLE, ROGUE

AGENT_USER = "system:serviceaccount:gpu-gateway:gpu-gateway-agent"
SECRET = "gpu-gateway-test-secret-0123456789abcdef"
SIMULATION = FIXTURES / "agent" / "llm-node.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _samples(state: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM gpu_samples").fetchone()[0])
    except sqlite3.Error:
        return 0


def _spooled(spool: Path) -> int:
    return len(list(spool.glob("*.json")))


def _gateway(tmp_path: Path, policy_dir: Path, port: int | None = None) -> Served:
    return start_server(tmp_path, "--jwt-secret-file", str(tmp_path / "jwt.secret"), "--jwt-issuer", "local",
                        "--jwt-audience", "gpuctl", policy_dir=policy_dir, port=port)


def _gpuctl(served: Served, tmp_path: Path, token: str, *args: str) -> Any:
    env = {**os.environ, "GPUCTL_CONFIG": str(tmp_path / "gpuctl.json")}
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", "--server", served.url, "--token", token,
                          "--certificate-authority", str(tmp_path / "tls" / "tls.crt"), *args],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    limits = yaml.safe_load((target / "limits.yaml").read_text())
    limits["telemetry"] = {**limits.get("telemetry", {}), "idle_after_s": 30}
    (target / "limits.yaml").write_text(yaml.safe_dump(limits))
    return target


def test_agent_reports_through_an_outage_and_the_gateway_accounts_and_alerts(tmp_path: Path,
                                                                              policy_dir: Path) -> None:
    (tmp_path / "jwt.secret").write_text(SECRET)
    served = _gateway(tmp_path, policy_dir)
    with served.client() as client:
        for body in llm_admissions():
            assert client.post("/validate", json=body).json()["response"]["allowed"]

    token, spool, metrics_port = tmp_path / "agent.token", tmp_path / "spool", _free_port()
    token.write_text(api_token("mallory", ["gpu-researchers"]))  # a person: may not report
    agent = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.gpu_gateway", "agent", "--gateway", served.url,
         "--token-file", str(token), "--simulate", str(SIMULATION), "--tick-seconds", "0.5",
         "--retry-max-s", "0.3", "--buffer-dir", str(spool), "--certificate-authority",
         str(tmp_path / "tls" / "tls.crt"), "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Refused (403): nothing stored, reports wait on disk. A new token is picked up without a restart.
        _wait("a refused report", lambda: _spooled(spool) >= 2, 30)
        assert _samples(served.state) == 0
        token.write_text(api_token(AGENT_USER, []))
        _wait("samples stored", lambda: _samples(served.state) >= 12, 30)

        # Outage: the gateway stops; the agent keeps sampling into its spool.
        port = int(served.url.rsplit(":", 1)[1])
        assert stop_server(served) == 0
        stored_before = _samples(served.state)
        _wait("reports spooled during the outage", lambda: _spooled(spool) >= 2, 30)
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'DCGM_FI_DEV_GPU_UTIL{Hostname="gpu-node-1",UUID="GPU-00000000-1111-2222-3333-000000000000"' in scrape
        assert 'namespace="research",pod="llm-70b-worker-0"' in scrape
        spooled_metric = next(line for line in scrape.splitlines()
                              if line.startswith("gpu_gateway_agent_spooled_reports "))
        assert float(spooled_metric.split()[1]) >= 2

        served = _gateway(tmp_path, policy_dir, port=port)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        log = agent.stdout.read().decode() if agent.stdout else ""
    try:
        assert _spooled(spool) == 0, log
        assert _samples(served.state) == 44 > stored_before  # 11 ticks x 4 GPUs: none lost, none twice

        admin = api_token("root", ["gpu-admins"])
        usage = json.loads(_gpuctl(served, tmp_path, admin, "-o", "json", "usage", "--since", "1d"))
        measured = usage["measured"]
        assert measured["users"]["bob"]["gpu_hours"] == pytest.approx(44 * 10 / 3600, abs=1e-4)
        assert measured["workloads"]["pytorchjobs.kubeflow.org research/llm-70b"]["owner"] == "bob"
        table = _gpuctl(served, tmp_path, admin, "usage", "--since", "1d")
        assert "Measured on the GPUs" in table and "bob" in table
        local = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "usage", "--state", str(served.state),
                                "--since", "1d", "-o", "json"], capture_output=True, text=True, timeout=60)
        assert local.returncode == 0, local.stderr
        assert json.loads(local.stdout)["measured"]["users"]["bob"] == measured["users"]["bob"]

        # bob sees his own measured usage; someone else's workload is not shown to mallory.
        assert "bob" in json.loads(_gpuctl(served, tmp_path, api_token("bob", ["gpu-researchers"]), "-o", "json",
                                           "usage", "--since", "1d"))["measured"]["users"]
        assert json.loads(_gpuctl(served, tmp_path, api_token("mallory", ["gpu-researchers"]), "-o", "json",
                                  "usage", "--since", "1d"))["measured"]["workloads"] == {}

        alerts = json.loads(_gpuctl(served, tmp_path, admin, "-o", "json", "audit", "list", "--alerts"))
        assert sorted(a["rule"] for a in alerts) == sorted(
            [ROGUE, ROGUE, GPU_ERRORS, COLLAPSE, GPU_ERRORS, IDLE, IDLE, IDLE, IDLE, GPU_ERRORS])
        assert all(a["action"] == "alert" and a["user"] == AGENT_USER for a in alerts)
        listed = _gpuctl(served, tmp_path, admin, "audit", "list", "--alerts")
        assert "rogue-gpu-process" in listed and "research/miner" in listed
        assert "verified" in _gpuctl(served, tmp_path, admin, "audit", "verify")

        with served.client() as client:
            text = client.get("/metrics").text
        assert 'gpu_gateway_telemetry_alerts_total{kind="rogue-gpu-process"}' in text
    finally:
        stop_server(served)
