"""pynvml's own code, run against a fake libnvidia-ml.so.1 (tests/fake_nvml/fake_nvml.c, built
here with gcc) loaded through LD_LIBRARY_PATH, as NVIDIA's own test infrastructure does: the
production reader's handling of readings, processes, unsupported ECC, a lost GPU, XID events
and a driver that is not loaded, without a GPU. The same reader ran on a real H200
(test_agent_gpu.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from served import Served, api_token, start_api_server, stop_server

SOURCE = Path(__file__).resolve().parents[1] / "fake_nvml" / "fake_nvml.c"
MIB = 2**20

UUID = "GPU-fa4e0000-0000-0000-0000-00000000000"
# gpu UUID NAME UTIL MEM_USED MEM_TOTAL POWER_MW TEMP ECC_CORR ECC_UNCORR LOST ECC_OK NPROC [PID MEM]...
TABLE = f"""\
gpu {UUID}0 FakeH100 73 {1000 * MIB} {8000 * MIB} 250500 55 1 2 0 1 2 4242 {600 * MIB} 4343 {200 * MIB}
gpu {UUID}1 FakeH100 0 0 {8000 * MIB} 60000 30 0 0 1 1 0
gpu {UUID}2 FakeL4 5 {10 * MIB} {4000 * MIB} 20000 40 0 0 0 0 0
xid 0 79
xid 2 48
"""

READ = """
import json, dataclasses
from gateway.telemetry.agent.nvml import PynvmlSource, NvmlUnavailable
source = PynvmlSource()
try:
    # A process as NVML reads it: its pid and memory (the agent resolves its pod afterwards).
    out = [[dict(dataclasses.asdict(r), processes=[{"pid": p.pid, "used_memory_bytes": p.used_memory_bytes}
                                                   for p in r.processes]) for r in source.read()] for _ in range(2)]
except NvmlUnavailable as exc:
    out = {"unavailable": str(exc)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the fake libnvidia-ml.so.1")
    lib = tmp_path_factory.mktemp("fake-nvml")
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib / "libnvidia-ml.so.1"),
                    str(SOURCE)], check=True, timeout=120)
    return lib


def _env(lib: Path, table: Path) -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}",
            "FAKE_NVML_CONFIG": str(table)}


def _read(lib: Path, tmp_path: Path, table: str) -> Any:
    (tmp_path / "table").write_text(table)
    out = subprocess.run([sys.executable, "-c", READ], env=_env(lib, tmp_path / "table"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_readings_processes_unsupported_ecc_a_lost_gpu_and_xid_events(fake_lib: Path, tmp_path: Path) -> None:
    first, second = _read(fake_lib, tmp_path, TABLE)
    gpu0, gpu1, gpu2 = first
    assert (gpu0["uuid"], gpu0["model"], gpu0["utilization"], gpu0["power_w"], gpu0["temperature_c"]) == (
        "GPU-fa4e0000-0000-0000-0000-000000000000", "FakeH100", 73.0, 250.5, 55.0)
    assert (gpu0["memory_used_bytes"], gpu0["memory_total_bytes"]) == (1000 * MIB, 8000 * MIB)
    assert (gpu0["ecc_corrected"], gpu0["ecc_uncorrected"]) == (1, 2)
    assert gpu0["processes"] == [{"pid": 4242, "used_memory_bytes": 600 * MIB},
                                 {"pid": 4343, "used_memory_bytes": 200 * MIB}]
    assert gpu0["xid_errors"] == [79] and not gpu0["error"]
    assert gpu1["error"] == "GPU is lost (fell off the bus or needs a reset)"
    assert gpu1["uuid"] == "GPU-fa4e0000-0000-0000-0000-000000000001"
    assert (gpu2["ecc_corrected"], gpu2["ecc_uncorrected"], gpu2["xid_errors"]) == (None, None, [48])
    assert [g["xid_errors"] for g in second] == [[], [], []]  # each event is reported once


def test_a_driver_that_is_not_loaded_is_named(fake_lib: Path, tmp_path: Path) -> None:
    out = _read(fake_lib, tmp_path, "init_error 9\n")
    assert out == {"unavailable": "NVML cannot start: Driver Not Loaded: the NVIDIA kernel driver is not loaded"}


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    served = start_api_server(tmp_path)
    yield served
    stop_server(served)


def test_the_agent_command_reports_what_nvml_reads(fake_lib: Path, tmp_path: Path, gateway: Served) -> None:
    (tmp_path / "table").write_text(TABLE)
    (tmp_path / "token").write_text(api_token("system:serviceaccount:gpu-gateway:gpu-gateway-agent", []))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.gpu_gateway", "agent", "--gateway", gateway.url, "--token-file",
         str(tmp_path / "token"), "--interval", "0.2", "--ticks", "3", "--node-name", "fake-node",
         "--buffer-dir", str(tmp_path / "spool"), "--metrics-port", "0", "--no-kube-pods",
         "--pod-resources-socket", str(tmp_path / "absent.sock"), "--proc-root", str(tmp_path / "proc")],
        env=_env(fake_lib, tmp_path / "table"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import sqlite3

    with sqlite3.connect(gateway.state) as db:
        rows = db.execute("SELECT gpu_uuid, utilization, error FROM gpu_samples ORDER BY ts, gpu_index").fetchall()
        alerts = [r[0] for r in db.execute("SELECT rule FROM audit WHERE action = 'alert' ORDER BY seq")]
    assert len(rows) == 9 and rows[0][:2] == ("GPU-fa4e0000-0000-0000-0000-000000000000", 73.0)
    # Two host processes (no /proc entry: gone or unreadable), a lost GPU, two XID events.
    assert sorted(alerts) == ["gpu-errors", "gpu-errors", "gpu-errors", "rogue-gpu-process", "rogue-gpu-process"]
