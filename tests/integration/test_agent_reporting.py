"""The agent's side of reporting: the bounded disk spool, the sender against a real gateway
(tokens refused and rotated, an unreachable gateway, a report it cannot read), and the
agent command's answers to a missing driver and a bad simulation file."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from served import Served, api_token, start_api_server, stop_server

from gateway.telemetry.agent.agent import Agent
from gateway.telemetry.agent.nvml import NvmlUnavailable, PynvmlSource
from gateway.telemetry.agent.pods import StaticPods
from gateway.telemetry.agent.reporter import Reporter, Spool, TokenFile
from gateway.telemetry.agent.simulate import ScriptedSource, SimulationError, load_simulation, parse_simulation

AGENT_USER = "system:serviceaccount:gpu-gateway:gpu-gateway-agent"


def report(n: int, samples: int = 2) -> dict[str, Any]:
    return {"node": "node-a", "samples": [
        {"uuid": f"GPU-{i}", "ts": 1_764_000_000.0 + 10 * n, "interval_s": 10, "utilization": 50}
        for i in range(samples)]}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Served]:
    served = start_api_server(tmp_path)
    yield served
    stop_server(served)


def test_the_spool_keeps_the_newest_reports_within_its_count_bound_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_reports=3)
    for n in range(5):
        spool.put(report(n, samples=2))
    assert spool.stats().reports == 3 and spool.stats().dropped_samples == 4
    again = Spool(tmp_path / "spool", max_reports=3)
    assert [r["samples"][0]["ts"] for _, r in again.oldest(10)] == [1_764_000_020.0, 1_764_000_030.0, 1_764_000_040.0]
    again.put(report(5))
    assert [r["samples"][0]["ts"] for _, r in again.oldest(10)][-1] == 1_764_000_050.0


def test_the_spool_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_reports=1000, max_bytes=2000)
    for n in range(20):
        spool.put(report(n, samples=3))
    stats = spool.stats()
    assert stats.bytes <= 2000 and stats.reports < 20 and stats.dropped_samples == 3 * (20 - stats.reports)


def test_reports_are_sent_and_acknowledged_once_the_token_is_one_that_may_report(tmp_path: Path,
                                                                                   gateway: Served) -> None:
    token = tmp_path / "token"
    token.write_text(api_token("alice", ["gpu-researchers"]))
    spool = Spool(tmp_path / "spool")
    reporter = Reporter(gateway.url, TokenFile(token), spool)
    for n in range(3):
        spool.put(report(n))
    assert reporter.send_once() is False  # 403: alice may not report
    token.write_text("not-a-jwt")
    assert reporter.send_once() is False  # 401
    time.sleep(0.01)
    token.write_text(api_token(AGENT_USER, []) + "\n")  # rotated in place, as the kubelet does
    assert reporter.send_once() is True
    assert reporter.send_once() is None and reporter.sent_samples == 6
    with gateway.client() as client:
        body = client.post("/api/v1/telemetry", json=report(0), headers={
            "authorization": f"Bearer {api_token(AGENT_USER, [])}"}).json()
    assert (body["accepted"], body["duplicates"]) == (0, 2)


def test_a_report_the_gateway_cannot_read_is_set_aside_and_the_rest_go_through(tmp_path: Path,
                                                                                gateway: Served) -> None:
    token = tmp_path / "token"
    token.write_text(api_token(AGENT_USER, []))
    spool = Spool(tmp_path / "spool")
    reporter = Reporter(gateway.url, TokenFile(token), spool)
    spool.put(report(0))
    spool.put({"node": "node-a", "samples": [{"uuid": "GPU-0", "ts": "yesterday"}]})
    spool.put(report(2))
    for _ in range(6):
        if reporter.send_once() is None:
            break
    assert spool.stats().reports == 0 and spool.stats().dropped_samples == 1
    assert len(list((tmp_path / "spool" / "rejected").glob("*.json"))) == 1
    assert reporter.sent_samples == 4


def test_sampling_never_waits_for_an_unreachable_gateway(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    sim = load_simulation(FIXTURES / "agent" / "llm-node.yaml")
    source = ScriptedSource(sim)
    spool = Spool(tmp_path / "spool")
    reporter = Reporter("https://127.0.0.1:9", TokenFile(token), spool, retry_min_s=0.05, retry_max_s=0.1)
    reporter.start()
    agent = Agent(sim.node, source, source, StaticPods(sim.pods), reporter, None, interval_s=10,
                  allocations=source.allocations)
    started = time.monotonic()
    for n in range(12):
        agent.tick(1_764_000_000 + 10 * n)
    assert time.monotonic() - started < 2.0
    reporter.stop(drain_s=0.2)
    assert spool.stats().reports == 11 and reporter.failures >= 1  # one tick had no NVML: nothing to send


def _agent_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "token").write_text("t")
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.gpu_gateway", "agent", "--gateway", "https://127.0.0.1:9",
         "--token-file", str(tmp_path / "token"), "--buffer-dir", str(tmp_path / "spool"), "--metrics-port", "0",
         "--retry-max-s", "0.1", *args], capture_output=True, text=True, timeout=60)


def test_without_a_driver_the_agent_says_why_and_keeps_running(tmp_path: Path) -> None:
    try:
        PynvmlSource().read()
        pytest.skip("this machine has a working NVIDIA driver")
    except NvmlUnavailable:
        pass
    out = _agent_cli(tmp_path, "--ticks", "3", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("cannot read the GPUs: NVML cannot start") == 3
    assert "libnvidia-ml.so.1 not found" in out.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("gpus: []", "gpus must be a non-empty list"),
    ("gpus: [{uuid: GPU-1, utilization: [high]}]", "gpus[0].utilization: 'high' is not a number"),
    ("gpus: [{uuid: GPU-1}]\ninterval_s: 0", "interval_s must be a number"),
    ("gpus: [{uuid: GPU-1, processes: [{pid: x}]}]", "needs an integer pid"),
    ("gpus: [{uuid: GPU-1}]\nextra: 1", "unknown key(s) extra"),
])
def test_a_bad_simulation_file_is_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    import yaml

    with pytest.raises(SimulationError) as err:
        parse_simulation(yaml.safe_load(text))
    assert message in str(err.value)
    (tmp_path / "sim.yaml").write_text(text)
    out = _agent_cli(tmp_path, "--simulate", str(tmp_path / "sim.yaml"))
    assert out.returncode == 2 and message in out.stderr


def test_the_simulation_file_in_the_docs_runs() -> None:
    text = (FIXTURES.parents[1] / "docs" / "agent.md").read_text()
    block = next(b for b in text.split("```yaml\n")[1:] if b.startswith("# node.yaml"))
    import yaml

    sim = parse_simulation(yaml.safe_load(block.split("```")[0]))
    source = ScriptedSource(sim)
    agent = Agent(sim.node, source, source, StaticPods(sim.pods), None, None, interval_s=sim.interval_s,
                  allocations=source.allocations)
    reports = [agent.sample(1_764_000_000 + 10 * t) for t in range(sim.ticks)]
    assert sum(r is None for r in reports) == 1
    pods = {p["pod"]["name"] if p["pod"] else None for r in reports if r for p in r["samples"][0]["processes"]}
    assert pods == {"llm-70b-worker-0", "miner", None}
    assert reports[-1] is not None and reports[-1]["samples"][0]["error"].startswith("GPU is lost")
