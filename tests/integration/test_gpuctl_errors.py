"""`gpuctl` errors a person can act on, and the exit codes a script relies on (0 done, 1 refused,
2 bad usage, 3 unreachable or failing, 4 not authenticated), against real servers on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INTERN
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
