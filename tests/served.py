"""Start and stop a real `gpu-gateway serve` process for integration tests."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trust(verify: str | bool) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, verify: str | bool, state: Path) -> None:
        self.proc, self.url, self.verify, self.state = proc, url, _trust(verify), state

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.verify, timeout=10)


def start_server(tmp_path: Path, *extra: str, tls: bool = True, policy_dir: Path | None = None,
                 port: int | None = None) -> Served:
    """`port`: listen there (a restart on the same address) instead of a free port."""
    port = port or _free_port()
    state = tmp_path / "state.db"
    args = [sys.executable, "-m", "gateway.cli.gpu_gateway", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--state", str(state), *extra]
    if policy_dir:
        args += ["--policy-dir", str(policy_dir)]
    if not tls:
        args.append("--insecure-http")
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    cert = tmp_path / "tls" / "tls.crt"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {(tmp_path / 'server.log').read_text()}")
        verify: str | bool = str(cert) if tls and "--cert" not in extra else False
        if tls and "--cert" in extra:
            verify = extra[extra.index("--cert") + 1]
        try:
            if not tls or Path(str(verify)).exists():
                httpx.get(f"{scheme}://127.0.0.1:{port}/healthz", verify=_trust(verify), timeout=1).raise_for_status()
                return Served(proc, f"{scheme}://127.0.0.1:{port}", verify, state)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not become healthy")
        time.sleep(0.1)


def stop_server(served: Served) -> int:
    served.proc.send_signal(signal.SIGTERM)
    return served.proc.wait(timeout=20)


API_SECRET = "gpu-gateway-test-secret-0123456789abcdef"
"""The HS256 secret of `start_api_server`; tokens for it come from `api_token` and `bearer`."""


def api_token(sub: str, groups: list[str], **claims: object) -> str:
    """A token the API server started by `start_api_server` accepts (override any claim)."""
    import jwt

    now = int(time.time())
    payload = {"iss": "local", "aud": "gpuctl", "sub": sub, "groups": groups, "iat": now, "exp": now + 3600, **claims}
    return jwt.encode(payload, API_SECRET, algorithm="HS256")


def bearer(sub: str, groups: list[str], **claims: object) -> dict[str, str]:
    return {"authorization": f"Bearer {api_token(sub, groups, **claims)}"}


def start_api_server(tmp_path: Path) -> Served:
    """A plain-HTTP gateway on loopback whose admin API takes HS256 tokens signed with API_SECRET."""
    secret = tmp_path / "jwt.secret"
    secret.write_text(API_SECRET)
    return start_server(tmp_path, "--jwt-secret-file", str(secret), "--jwt-issuer", "local",
                        "--jwt-audience", "gpuctl", tls=False)
