"""README's quick start as a new user follows it: the commands it gives run, the answer it
shows is the one the gateway gives, its test command is what CI runs, and what a local
gateway writes is ignored by git."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import make_pod, review
from served import start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _quick_start() -> str:
    return README.read_text().split("## Quick start\n", 1)[1].split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _quick_start(), re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_run_command_installs_only_what_running_needs() -> None:
    install, serve = _blocks("sh")[0].strip().split(" && ")
    assert install == "pip install -e ."
    assert serve.startswith("gpu-gateway serve ") and "--policy-dir" not in serve


def test_the_readme_test_command_is_what_ci_runs() -> None:
    command = _blocks("sh")[2].strip()
    assert command == "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command


def test_the_quick_start_request_gets_the_answer_the_readme_shows(tmp_path: Path) -> None:
    """The serve command as written (on a free port), the curl body as written, the output as shown."""
    serve = shlex.split(_blocks("sh")[0].strip().split(" && ")[1])
    curl = _blocks("sh")[1]
    url = re.search(r"curl -s (http://\S+)", curl)
    body = re.search(r"-d '(.*?)'", curl, re.S)
    assert url and body, curl
    readme_port = serve[serve.index("--port") + 1]
    assert f":{readme_port}/" in url.group(1)
    port = str(_free_port())
    serve[serve.index("--port") + 1] = port
    log = tmp_path / "serve.log"
    work = tmp_path / "work"
    work.mkdir()
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.gpu_gateway", *serve[1:]], cwd=work,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=sink, stderr=subprocess.STDOUT)
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx.post(url.group(1).replace(f":{readme_port}/", f":{port}/"),
                                    content=body.group(1), headers={"content-type": "application/json"}, timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None, log.read_text()
        # What `python3 -m json.tool` prints of it.
        assert json.dumps(answer.json(), indent=4) + "\n" == _blocks("json")[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    assert (work / "gpu-gateway.db").is_file()


def test_git_ignores_every_file_a_local_gateway_writes(tmp_path: Path) -> None:
    """A TLS trial with signed checkpoints, its files looked up as if written at the repository's root."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(REPO), "rev-parse"],
                                                     capture_output=True, check=False).returncode:
        pytest.skip("not a git checkout")
    key = tmp_path / "audit.key"
    subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "audit", "keygen", "--out", str(key)],
                   check=True, capture_output=True)
    served = start_server(tmp_path, "--checkpoint-key", str(key), "--checkpoint-dir", str(tmp_path / "checkpoints"))
    try:
        with served.client() as c:
            assert c.post("/validate", json=review(make_pod(gpus=1).obj(), user="bob").body()).status_code == 200
        written = {p for p in tmp_path.rglob("*") if p.is_file()}
    finally:
        assert stop_server(served) == 0
    written |= {p for p in tmp_path.rglob("*") if p.is_file()}
    names = sorted(str(p.relative_to(tmp_path)) for p in written if p.name != "server.log")  # the test's own
    assert {"state.db", "state.db-wal", "state.db.history-key", "tls/tls.crt", "audit.key",
            "checkpoints/checkpoints.jsonl"} <= set(names), names
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"], input="\n".join(names),
                             capture_output=True, text=True, check=False).stdout.splitlines()
    assert sorted(ignored) == names, f"not ignored: {sorted(set(names) - set(ignored))}"
