"""`gpuctl` run as a subprocess against a real gateway: output, config file and exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INTERN, RESEARCHER, make_job, make_pytorchjob, review
from served import Served, api_token, start_api_server, stop_server

token = api_token


ADMIN = token("root", ["gpu-admins"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_api_server(tmp_path_factory.mktemp("gpuctl"))
    with served.client() as c:
        c.post("/validate", json=review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())
        c.post("/validate", json=review(make_job(gpus=8).named("research", "b1").obj(), user="bob",
                                        groups=RESEARCHER).body())
    yield served
    stop_server(served)


def gpuctl(*args: str, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("gpuctl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli.gpuctl"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")}
    full_env.update(GPUCTL_CONFIG=str(config), **(env or {}))
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=full_env, check=False)


def test_whoami_with_flags_and_json_output(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "whoami", config=tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["role"] == "admin"


def test_login_saves_a_private_config_used_afterwards(server: Served, tmp_path: Path) -> None:
    config = tmp_path / "dir" / "config.json"
    out = gpuctl("login", "--server", server.url, "--token", ADMIN, config=config)
    assert out.returncode == 0, out.stderr
    assert "logged in to" in out.stdout and "as root (role admin)" in out.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    out = gpuctl("audit", "list", config=config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["#", "TIME", "USER", "ROLE", "ACTION", "TARGET", "GPUS", "DECISION",
                                                  "RULE"]
    assert "workload-gpu-limit" in out.stdout
    out = gpuctl("audit", "verify", config=config)
    assert out.returncode == 0 and "audit chain intact: 2 records" in out.stdout


def test_token_from_the_environment(server: Served, tmp_path: Path) -> None:
    out = gpuctl("-o", "yaml", "usage", config=tmp_path / "none.json",
                 env={"GPUCTL_SERVER": server.url, "GPUCTL_TOKEN": token("bob", list(RESEARCHER))})
    assert out.returncode == 0, out.stderr
    assert "bob: 8" in out.stdout


def test_exit_codes_a_script_can_rely_on(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    expired = token("root", ["gpu-admins"], exp=int(time.time()) - 600)
    out = gpuctl("--server", server.url, "--token", expired, "whoami", config=cfg)
    assert out.returncode == 4 and "expired" in out.stderr and "gpuctl login" in out.stderr
    lead = token("lena", ["gpu-leads", "team:vision"])
    out = gpuctl("--server", server.url, "--token", lead, "audit", "verify", config=cfg)
    assert out.returncode == 1 and "ask an administrator" in out.stderr
    out = gpuctl("--server", "http://127.0.0.1:9", "--token", ADMIN, "whoami", config=cfg)
    assert out.returncode == 3 and "cannot reach" in out.stderr
    out = gpuctl("whoami", config=cfg)
    assert out.returncode == 2 and "no server" in out.stderr


def test_export_is_json_lines(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", ADMIN, "audit", "export", "--user", "bob",
                 config=tmp_path / "c.json")
    assert [json.loads(line)["user"] for line in out.stdout.splitlines()] == ["bob"]


def test_request_approve_and_use_an_approval_through_the_webhook(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    alice = token("alice", list(INTERN))
    lena = token("lena", ["gpu-leads", "team:vision"])
    big = make_job(gpus=8, parallelism=4).named("research", "big-run").obj()
    with server.client() as c:
        assert c.post("/validate", json=review(big, user="alice", groups=INTERN).body()).json()["response"][
            "allowed"] is False
    out = gpuctl("--server", server.url, "--token", alice, "-o", "json", "request", "launch", "Job", "research/big-run",
                 "--gpus", "32", "--reason", "paper deadline", config=cfg)
    assert out.returncode == 0, out.stderr
    approval = json.loads(out.stdout)["id"]
    out = gpuctl("--server", server.url, "--token", alice, "approve", approval, config=cfg)
    assert out.returncode == 1 and "different person" in out.stderr
    out = gpuctl("--server", server.url, "--token", lena, "approvals", "--state", "pending", config=cfg)
    assert approval in out.stdout and "paper deadline" in out.stdout
    out = gpuctl("--server", server.url, "--token", lena, "approve", approval, "--comment", "ok once", config=cfg)
    assert out.returncode == 0 and "is approved" in out.stdout
    with server.client() as c:
        first = c.post("/validate", json=review(big, user="alice", groups=INTERN).body()).json()["response"]
        again = c.post("/validate", json=review(big, user="alice", groups=INTERN).body()).json()["response"]
    assert first["allowed"] is True and again["allowed"] is False


def test_break_glass_grant_and_revoke(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "grant", "ivan", "lead",
                 "--reason", "on-call: stuck 2k-GPU job", "--for", "30m", config=cfg)
    assert out.returncode == 0, out.stderr
    grant_id = json.loads(out.stdout)["id"]
    out = gpuctl("--server", server.url, "--token", token("ivan", list(INTERN)), "-o", "json", "whoami", config=cfg)
    assert json.loads(out.stdout)["role"] == "lead"
    out = gpuctl("--server", server.url, "--token", token("ivan", list(INTERN)), "grant", "ivan", "admin",
                 "--reason", "x", "--for", "1h", config=cfg)
    assert out.returncode == 1
    out = gpuctl("--server", server.url, "--token", ADMIN, "revoke", grant_id, config=cfg)
    assert out.returncode == 0 and "revoked" in out.stdout
    out = gpuctl("--server", server.url, "--token", ADMIN, "grants", config=cfg)
    assert grant_id in out.stdout and "revoked" in out.stdout


def test_check_prints_what_gpu_gateway_check_prints(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    manifest = tmp_path / "big.json"
    manifest.write_text(json.dumps(make_job(gpus=8, parallelism=4).named("research", "big-run").obj()))
    alice = token("alice", list(INTERN))
    out = gpuctl("--server", server.url, "--token", alice, "check", "-f", str(manifest), config=cfg)
    local = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "check", "--user", "alice",
                            "--group", INTERN[0], "--group", INTERN[1], "-f", str(manifest),
                            "--state", str(server.state)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 == local.returncode, out.stderr
    assert out.stdout == local.stdout and out.stdout.startswith("DENIED: launch of Job research/big-run by alice")
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "check", "-f", str(manifest),
                 "--as", "bob", "--as-group", "gpu-researchers", "--action", "kill", "--owner", "bob", config=cfg)
    assert out.returncode == 0, out.stderr
    assert [(r["user"], r["action"], r["allowed"]) for r in json.loads(out.stdout)] == [("bob", "kill", True)]


def test_check_as_someone_else_is_refused_without_admin(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(make_job(gpus=8).named("research", "small").obj()))
    alice = token("alice", list(INTERN))
    out = gpuctl("--server", server.url, "--token", alice, "check", "-f", str(manifest), "--as", "bob", config=cfg)
    assert out.returncode == 1 and "only check as themselves" in out.stderr
    manifest.write_text("a: [unclosed")
    out = gpuctl("--server", server.url, "--token", alice, "check", "-f", str(manifest), config=cfg)
    assert out.returncode == 2 and f"{manifest}: not YAML or JSON" in out.stderr
    out = gpuctl("--server", server.url, "--token", alice, "check", "-f", str(manifest), "--as-group", "g",
                 config=cfg)
    assert out.returncode == 2


def test_usage_with_gpu_hours(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", ADMIN, "usage", "--since", "1h", config=tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["BY", "NAME", "GPUS", "NOW", "LIMIT", "GPU-HOURS"]
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "usage", "--since", "1h",
                 config=tmp_path / "c.json")
    hours = json.loads(out.stdout)["gpu_hours"]
    assert hours["users"]["bob"] > 0 and set(hours) == {"since", "until", "users", "teams", "roles"}
