"""The real NVML path (pynvml on an NVIDIA driver), skipped where there is no GPU.

Self-contained (no conftest fixtures), so that it also runs on a GPU machine with only the
agent's dependencies: `python3 -m pytest -m gpu --noconftest tests/integration/test_agent_gpu.py`.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.telemetry.agent.nvml import NvmlUnavailable, PynvmlSource
from gateway.telemetry.agent.pods import ProcCgroups, container_of
from gateway.telemetry.report import parse_report

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def nvml() -> Iterator[PynvmlSource]:
    source = PynvmlSource()
    try:
        readings = source.read()
    except NvmlUnavailable as exc:
        pytest.skip(f"no NVIDIA GPU or driver here: {exc}")
    if not readings:
        pytest.skip("NVML runs but sees no GPU")
    yield source
    source.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_gpu_reads_through_pynvml(nvml: PynvmlSource) -> None:
    for r in nvml.read():
        print(f"GPU {r.index} {r.uuid} {r.model}: util {r.utilization}% mem {r.memory_used_bytes}/"
              f"{r.memory_total_bytes} B power {r.power_w} W temp {r.temperature_c} C "
              f"ECC {r.ecc_corrected}/{r.ecc_uncorrected} XID {r.xid_errors} procs {r.processes} err {r.error!r}")
        assert r.uuid.startswith(("GPU-", "MIG-")) and not r.error
        assert r.memory_total_bytes and 0 <= (r.memory_used_bytes or 0) <= r.memory_total_bytes
        assert r.utilization is not None and 0 <= r.utilization <= 100
        assert r.temperature_c is None or 0 < r.temperature_c < 130
        assert r.power_w is None or r.power_w > 0
        assert all(v is None or v >= 0 for v in (r.ecc_corrected, r.ecc_uncorrected))


def test_a_process_using_the_gpu_is_listed_with_its_memory(nvml: PynvmlSource) -> None:
    pytest.importorskip("torch")
    code = ("import time, torch; x = torch.empty(512 * 2**20, dtype=torch.uint8, device='cuda'); "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline, seen = time.monotonic() + 20, []
        while time.monotonic() < deadline:
            seen = [p for r in nvml.read() for p in r.processes]
            if any(p.used_memory_bytes >= 512 * 2**20 for p in seen):
                break
            time.sleep(0.5)
        print(f"child pid {proc.pid}; NVML compute processes: {seen}")
        ours = [p for p in seen if p.pid == proc.pid]
        if ours:
            cgroups = ProcCgroups()
            print(f"cgroup of {proc.pid}: {cgroups.cgroup(proc.pid)!r} -> {container_of(cgroups, proc.pid)}")
        assert any(p.used_memory_bytes >= 512 * 2**20 for p in seen), "NVML lists no process holding the memory"
    finally:
        proc.kill()
        proc.wait(timeout=10)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[Any] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.path == "/api/v1/telemetry" and self.headers["authorization"] == "Bearer t0ken"
        type(self).bodies.append(json.loads(body))
        answer = b'{"accepted": 0, "duplicates": 0, "alerts": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


def test_the_agent_command_reports_real_gpus(nvml: PynvmlSource, tmp_path: Path) -> None:
    uuids = {r.uuid for r in nvml.read()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text("t0ken\n")
    metrics_port = _free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.agent", "--gateway", f"http://127.0.0.1:{server.server_port}",
         "--token-file", str(tmp_path / "token"), "--interval", "1", "--ticks", "4", "--node-name", "gpu-test",
         "--buffer-dir", str(tmp_path / "spool"), "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        scrape, deadline = "", time.monotonic() + 30
        while "DCGM_FI_DEV_GPU_UTIL{" not in scrape and time.monotonic() < deadline:
            try:
                scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        server.shutdown()
    print(agent.stdout.read() if agent.stdout else "")
    print("\n".join(line for line in scrape.splitlines() if line.startswith("DCGM_FI_DEV_")))
    samples = [s for body in _Receiver.bodies for s in parse_report(body)]
    assert {s.uuid for s in samples} == uuids
    assert len(samples) == 4 * len(uuids) and all(s.node == "gpu-test" and not s.error for s in samples)
    assert not list((tmp_path / "spool").glob("*.json"))
