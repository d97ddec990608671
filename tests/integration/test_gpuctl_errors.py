"""`gpuctl` and `gpu-gateway` errors a person can act on, and the exit codes a script relies on
(0 done, 1 denied or refused, 2 bad usage or unreadable input, 3 unreachable or failing, 4 not
authenticated), against real servers on loopback."""

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

import pytest
from conftest import INTERN, make_job
from served import API_SECRET, Served, api_token, start_api_server, start_server, stop_server

from integration.test_gpuctl import gpuctl

ADMIN = api_token("root", ["gpu-admins"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_api_server(tmp_path_factory.mktemp("errors"))
    yield served
    stop_server(served)


def test_expired_token_says_log_in_again(server: Served, tmp_path: Path) -> None:
    expired = api_token("root", ["gpu-admins"], exp=int(time.time()) - 600)
    out = gpuctl("--server", server.url, "--token", expired, "whoami", config=tmp_path / "c.json")
    assert out.returncode == 4 and out.stdout == ""
    assert out.stderr.startswith("error: token expired; run `gpuctl login")


def test_a_token_the_gateway_refuses_for_another_reason(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", api_token("root", ["gpu-admins"], aud="someone-else"),
                 "whoami", config=tmp_path / "c.json")
    assert out.returncode == 4 and "not authenticated: the token is not for this audience" in out.stderr
    out = gpuctl("--server", server.url, "--token", "not-a-jwt", "audit", "list", config=tmp_path / "c.json")
    assert out.returncode == 4 and "not a well-formed JWT" in out.stderr and "gpuctl login" in out.stderr


def test_forbidden_says_what_to_do(server: Served, tmp_path: Path) -> None:
    alice = api_token("alice", list(INTERN))
    out = gpuctl("--server", server.url, "--token", alice, "grant", "alice", "admin", "--reason", "x", "--for", "1h",
                 config=tmp_path / "c.json")
    assert out.returncode == 1
    assert out.stderr.startswith("error: forbidden: user alice") and "`gpuctl whoami` shows your role" in out.stderr
    assert out.stderr.rstrip().endswith("(403)")


def test_not_found_is_a_refusal(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", ADMIN, "revoke", "bg-000000", config=tmp_path / "c.json")
    assert out.returncode == 1 and "no such approval or grant: bg-000000 (404)" in out.stderr


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = gpuctl("--server", f"http://127.0.0.1:{port}", "--token", ADMIN, "whoami", config=tmp_path / "c.json")
    assert out.returncode == 3
    assert f"cannot reach http://127.0.0.1:{port}" in out.stderr and "check --server" in out.stderr


def test_a_server_that_never_answers(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        out = gpuctl("--server", f"http://127.0.0.1:{port}", "--token", ADMIN, "--request-timeout", "1",
                     "whoami", config=tmp_path / "c.json")
    assert out.returncode == 3 and "did not answer within 1 s" in out.stderr
    assert time.monotonic() - started < 20


def test_an_untrusted_certificate_names_the_fix(tmp_path: Path) -> None:
    secret = tmp_path / "jwt.secret"
    secret.write_text(API_SECRET)
    served = start_server(tmp_path, "--jwt-secret-file", str(secret), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl")
    try:
        out = gpuctl("--server", served.url, "--token", ADMIN, "whoami", config=tmp_path / "c.json")
        assert out.returncode == 3
        assert "cannot verify the TLS certificate" in out.stderr and "--certificate-authority" in out.stderr
        out = gpuctl("--server", served.url, "--token", ADMIN, "--certificate-authority",
                     str(tmp_path / "tls" / "tls.crt"), "whoami", config=tmp_path / "c.json")
        assert out.returncode == 0, out.stderr
    finally:
        stop_server(served)


def test_a_gateway_without_the_admin_api(tmp_path: Path) -> None:
    served = start_server(tmp_path, tls=False)
    try:
        out = gpuctl("--server", served.url, "--token", ADMIN, "whoami", config=tmp_path / "c.json")
    finally:
        stop_server(served)
    assert out.returncode == 3
    assert "the gateway cannot answer now (503): the admin API is off" in out.stderr


def test_bad_usage_is_2(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "--token", ADMIN, "usage", "--by", "planet", config=tmp_path / "c.json")
    assert out.returncode == 2
    out = gpuctl("--token", ADMIN, "whoami", config=tmp_path / "c.json")
    assert out.returncode == 2 and "no server" in out.stderr


def test_unreadable_input_and_bad_values_are_2_naming_what_was_typed(server: Served, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    cases = [
        (["check", "-f", str(bad)], f"error: {bad}: not YAML or JSON"),
        (["quota", "get", "vision"], "quota target 'vision' must be user:NAME, team:NAME or role:NAME "
                                     "(a team's: team:vision)"),
        (["audit", "list", "--since", "yesterday"], "Invalid value for '--since': 'yesterday' is neither"),
        (["usage", "--since", "30d", "--until", "soon"], "Invalid value for '--until': 'soon' is neither"),
        (["grant", "ivan", "lead", "--reason", "x", "--for", "48h"],
         "error: --for must be above 0 and at most 86400 seconds (24h) (400)"),
        (["grant", "ivan", "lead", "--reason", "x", "--for", "a while"], "Invalid value for '--for'"),
        (["request", "kill", "Job", "research/x", "--reason", "x", "--expires-in", "8d"],
         "error: --expires-in must be above 0 and at most 604800 seconds (7d) (400)"),
        (["request", "launch", "Job", "research/x", "--reason", "x"], "error: --gpus (the most GPUs"),
        (["audit", "list", "--limit", "0"], "error: --limit must be a positive integer (400)"),
        (["whoami", "--colour"], "No such option"),
        (["whoami", "extra"], "unexpected extra argument"),
        (["whoami", "-o", "csv"], "-o csv is only for `gpuctl usage`"),
    ]
    for args, message in cases:
        out = gpuctl("--server", server.url, "--token", ADMIN, *args, config=tmp_path / "c.json")
        assert (out.returncode, out.stdout) == (2, ""), (args, out.stderr)
        assert message in out.stderr and "expires_in_s" not in out.stderr, (args, out.stderr)


def test_refusals_and_denials_are_1(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "grant", "ivan", "lead", "--reason", "x",
                 "--for", "10m", config=cfg)
    grant_id = json.loads(out.stdout)["id"]
    assert gpuctl("--server", server.url, "--token", ADMIN, "revoke", grant_id, config=cfg).returncode == 0
    again = gpuctl("--server", server.url, "--token", ADMIN, "revoke", grant_id, config=cfg)
    assert again.returncode == 1 and again.stderr.rstrip().endswith("(409)"), again.stderr
    manifest = tmp_path / "big.json"
    manifest.write_text(json.dumps(make_job(gpus=8, parallelism=4).named("research", "big").obj()))
    out = gpuctl("--server", server.url, "--token", api_token("alice", list(INTERN)), "check", "-f", str(manifest),
                 config=cfg)
    assert out.returncode == 1 and out.stdout.startswith("DENIED: launch of Job research/big")


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"error": "internal", "reason": "database exploded"}'
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_failing_gateway_is_3(tmp_path: Path) -> None:
    failing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    try:
        out = gpuctl("--server", f"http://127.0.0.1:{failing.server_address[1]}", "--token", ADMIN, "whoami",
                     config=tmp_path / "c.json")
    finally:
        failing.shutdown()
        failing.server_close()
    assert out.returncode == 3 and "the gateway failed (500): database exploded; its log says more" in out.stderr


def test_no_token_is_4(server: Served, tmp_path: Path) -> None:
    out = gpuctl("--server", server.url, "whoami", config=tmp_path / "c.json")
    assert out.returncode == 4 and "no token: pass --token" in out.stderr


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_gpu_gateway_follows_the_same_rule(server: Served, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    good = tmp_path / "small.json"
    good.write_text(json.dumps(make_job(gpus=8).named("research", "small").obj()))
    big = tmp_path / "big.json"
    big.write_text(json.dumps(make_job(gpus=8, parallelism=4).named("research", "big").obj()))
    as_alice = ["check", "--user", "alice", "--group", INTERN[0], "--group", INTERN[1], "-f"]
    assert gateway_cli(*as_alice, str(good)).returncode == 0
    assert gateway_cli(*as_alice, str(big)).returncode == 1
    out = gateway_cli(*as_alice, str(bad))
    assert out.returncode == 2 and f"error: {bad}: not YAML or JSON" in out.stderr
    out = gateway_cli("audit", "list", "--state", str(server.state), "--since", "yesterday")
    assert out.returncode == 2 and "Invalid value for '--since'" in out.stderr
    out = gateway_cli("audit", "list", "--state", str(tmp_path / "missing.db"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: no database listens there
    out = gateway_cli("usage", "--database-url", f"postgresql://gw@127.0.0.1:{port}/gw")
    assert out.returncode == 3 and out.stderr.startswith("error: cannot read the ledger: PostgreSQL"), out.stderr
