"""The real `gpu-gateway serve` with admin API authentication: whoami and its refusals over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from oidc_issuer import AUDIENCE, Issuer, SigningKey, unsigned_token
from served import Served, start_server, stop_server

SECRET = b"0123456789abcdef0123456789abcdef-local"


@pytest.fixture
def secret_server(tmp_path: Path, policy_dir: Path) -> Iterator[Served]:
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    served = start_server(tmp_path, "--jwt-secret-file", str(tmp_path / "secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", tls=False, policy_dir=policy_dir)
    yield served
    stop_server(served)


def local_token(**overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": "local", "aud": "gpuctl", "sub": "erin", "groups": ["gpu-leads", "team:vision"],
              "iat": now, "exp": now + 60, **overrides}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_whoami_with_a_shared_secret_token(secret_server: Served) -> None:
    with secret_server.client() as c:
        r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {local_token()}"})
        assert r.status_code == 200
        assert r.json() == {"username": "erin", "groups": ["gpu-leads", "team:vision"], "role": "lead",
                            "teams": ["vision"], "grants": []}
        r = c.get("/api/v1/whoami")
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert r.headers["www-authenticate"].startswith('Bearer realm="gpu-gateway", error="invalid_token"')
        r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {local_token(exp=int(time.time()) - 600)}"})
        assert r.status_code == 401 and r.json()["reason"] == "the token has expired; get a new one"
        assert 'error_description="the token has expired; get a new one"' in r.headers["www-authenticate"]
        r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {unsigned_token({'sub': 'erin'})}"})
        assert r.status_code == 401 and "'none' is not accepted" in r.json()["reason"]
        assert c.get("/api/v1/openapi.json").json()["paths"]["/whoami"]["get"]["operationId"] == "whoami"
        assert c.get("/healthz").text == "ok"
    log = (secret_server.state.parent / "server.log").read_text()
    assert "eyJ" not in log and "has expired" in log  # refusals are logged with their reason, never the token


def test_whoami_with_a_local_oidc_issuer(tmp_path: Path, policy_dir: Path) -> None:
    with Issuer() as issuer:
        served = start_server(tmp_path, "--oidc-issuer", issuer.url, "--oidc-audience", AUDIENCE, tls=False,
                              policy_dir=policy_dir)
        try:
            with served.client() as c:
                r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {issuer.token()}"})
                assert r.status_code == 200, r.text
                assert r.json() == {"username": "alice", "groups": ["gpu-researchers", "team:vision"],
                                    "role": "researcher", "teams": ["vision"], "grants": []}
                forged = issuer.token(SigningKey("key-1"))
                r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {forged}"})
                assert r.status_code == 401 and "signature does not verify" in r.json()["reason"]
                r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {issuer.token(aud='other')}"})
                assert r.status_code == 401 and "audience" in r.json()["reason"]
        finally:
            stop_server(served)


def test_without_authentication_the_api_is_off_and_admission_works(tmp_path: Path, policy_dir: Path) -> None:
    served = start_server(tmp_path, tls=False, policy_dir=policy_dir)
    try:
        with served.client() as c:
            r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {local_token()}"})
            assert r.status_code == 503 and "no authentication is configured" in r.json()["reason"]
            assert c.get("/readyz").status_code == 200
    finally:
        stop_server(served)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--oidc-issuer", "https://idp.example.com"], 2, "--oidc-issuer needs --oidc-audience"),
    (["--jwt-issuer", "local"], 2, "need --jwt-secret-file"),
    (["--jwt-secret-file", "{tmp}/short", "--jwt-issuer", "i", "--jwt-audience", "a"], 2, "use at least 32"),
    (["--jwt-secret-file", "{tmp}/missing", "--jwt-issuer", "i", "--jwt-audience", "a"], 2, "cannot read"),
    (["--oidc-issuer", "http://idp.example.com", "--oidc-audience", "a"], 2, "must use https"),
])
def test_bad_flags_are_refused_loudly(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "short").write_text("too short")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "serve", "--insecure-http",
                          "--host", "127.0.0.1", "--port", "1", "--state", str(tmp_path / "s.db"), *argv],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == code and message in out.stderr, out.stderr
