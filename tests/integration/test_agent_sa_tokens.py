"""Node agents with projected service-account tokens: a real `gpu-gateway serve` trusts the
cluster's service-account issuer (a real https issuer on loopback that, like the API server,
wants a bearer token and advertises its JWKS on another address) for POST /api/v1/telemetry
only, and refuses the same tokens on every admin endpoint."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from oidc_issuer import Issuer, SigningKey, hs256_token, unsigned_token
from served import API_SECRET, Served, bearer, start_server, stop_server

from gateway.telemetry.agent.reporter import Reporter, Spool, TokenFile
from gateway.webhook.tls import ensure_self_signed

AUDIENCE = "gpu-gateway"
AGENT = "system:serviceaccount:gpu-gateway:gpu-gateway-agent"
GATEWAY_SA_TOKEN = "gateway-own-service-account-token"


def sa_claims(issuer: Issuer, account: str = AGENT, **overrides: Any) -> dict[str, Any]:
    """Claims shaped as the API server writes them into a projected token: no groups."""
    _, _, namespace, name = account.split(":")
    claims: dict[str, Any] = {
        "sub": account, "aud": [AUDIENCE], "preferred_username": None, "groups": None,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": "u-1"},
                          "pod": {"name": "gpu-gateway-agent-x7k2p", "uid": "p-1"}}}
    return issuer.claims(**{**claims, **overrides})


def sa_token(issuer: Issuer, account: str = AGENT, **overrides: Any) -> str:
    key = issuer.keys[0]
    return jwt.encode(sa_claims(issuer, account, **overrides), key.private, algorithm=key.alg,
                      headers={"kid": key.kid})


def report(ts: float) -> dict[str, Any]:
    return {"node": "gpu-node-1", "samples": [{"uuid": "GPU-0", "ts": ts, "interval_s": 10, "utilization": 90}]}


@pytest.fixture
def cluster_issuer(tmp_path: Path) -> Iterator[tuple[Issuer, Path]]:
    cert, key = ensure_self_signed(tmp_path / "issuer-tls", ["127.0.0.1"])
    with Issuer(tls=(cert, key), bearer=GATEWAY_SA_TOKEN) as issuer:
        # As kube-apiserver does by default: its external address, not the issuer's host.
        issuer.discovery_override = {"jwks_uri": "https://192.0.2.10:6443/keys"}
        yield issuer, cert


@pytest.fixture
def gateway(tmp_path: Path, policy_dir: Path, cluster_issuer: tuple[Issuer, Path]) -> Iterator[Served]:
    issuer, ca = cluster_issuer
    (tmp_path / "jwt.secret").write_text(API_SECRET)
    (tmp_path / "sa-token").write_text(GATEWAY_SA_TOKEN + "\n")
    served = start_server(tmp_path, "--jwt-secret-file", str(tmp_path / "jwt.secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", "--agent-token-issuer", issuer.url,
                          "--agent-token-audience", AUDIENCE, "--agent-token-ca", str(ca),
                          "--agent-token-bearer-file", str(tmp_path / "sa-token"), tls=False, policy_dir=policy_dir)
    yield served
    stop_server(served)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_the_agents_projected_token_reports_telemetry(tmp_path: Path, gateway: Served,
                                                      cluster_issuer: tuple[Issuer, Path]) -> None:
    issuer, _ = cluster_issuer
    token = sa_token(issuer)
    # The agent's own sender, with the token file the kubelet writes.
    (tmp_path / "agent-token").write_text(token)
    spool = Spool(tmp_path / "spool")
    reporter = Reporter(gateway.url, TokenFile(tmp_path / "agent-token"), spool)
    spool.put(report(1_763_999_990.0))
    assert reporter.send_once() is True and reporter.sent_samples == 1
    with gateway.client() as c:
        r = c.post("/api/v1/telemetry", json=report(1_764_000_000.0), headers=auth(token))
        assert r.status_code == 200, r.text
        assert (r.json()["accepted"], r.json()["duplicates"]) == (1, 0)
        r = c.post("/api/v1/telemetry", json=report(1_764_000_000.0), headers=auth(token))
        assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    # The keys came from the issuer's own origin, fetched with the gateway's token; nothing was refused.
    assert issuer.jwks_requests == 1 and issuer.refused_requests == 0


@pytest.mark.parametrize("endpoint", [
    ("GET", "/api/v1/whoami"), ("GET", "/api/v1/audit"), ("GET", "/api/v1/usage"), ("GET", "/api/v1/roles"),
    ("GET", "/api/v1/quotas"), ("GET", "/api/v1/policy"), ("GET", "/api/v1/approvals"),
    ("POST", "/api/v1/check"),
])
def test_the_same_token_is_refused_on_the_admin_api(gateway: Served, cluster_issuer: tuple[Issuer, Path],
                                                    endpoint: tuple[str, str]) -> None:
    issuer, _ = cluster_issuer
    method, path = endpoint
    with gateway.client() as c:
        r = c.request(method, path, headers=auth(sa_token(issuer)), json={} if method == "POST" else None)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_token"  # the admin authenticator does not trust the agents' issuer
        assert r.headers["www-authenticate"].startswith('Bearer realm="gpu-gateway", error="invalid_token"')


def test_admin_api_tokens_still_work_on_both(gateway: Served) -> None:
    with gateway.client() as c:
        assert c.get("/api/v1/whoami", headers=bearer("erin", ["gpu-leads"])).json()["role"] == "lead"
        r = c.post("/api/v1/telemetry", json=report(1_764_000_100.0), headers=bearer(AGENT, []))
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = c.post("/api/v1/telemetry", json=report(1_764_000_110.0), headers=bearer("erin", ["gpu-leads"]))
        assert r.status_code == 403


def test_refused_agent_tokens(gateway: Served, cluster_issuer: tuple[Issuer, Path]) -> None:
    issuer, _ = cluster_issuer
    now = int(time.time())
    public_pem = issuer.keys[0].public_pem()
    cases = {
        "not for this audience": sa_token(issuer, aud=["https://kubernetes.default.svc.cluster.local"]),
        "has expired": sa_token(issuer, exp=now - 600, iat=now - 4200, nbf=now - 4200),
        "not valid yet": sa_token(issuer, nbf=now + 600),
        "'none' is not accepted": unsigned_token(sa_claims(issuer)),
        "'HS256' is not accepted": hs256_token(public_pem, sa_claims(issuer), {"alg": "HS256", "kid": "key-1"}),
        "not a service account": sa_token(issuer, sub="alice"),
        "names another service account": sa_token(issuer, **{"kubernetes.io": {"namespace": "evil"}}),
        "has no 'exp' claim": sa_token(issuer, exp=None),
    }
    with gateway.client() as c:
        for reason, token in cases.items():
            r = c.post("/api/v1/telemetry", json=report(1_764_000_200.0), headers=auth(token))
            assert r.status_code == 401 and reason in r.json()["reason"], (reason, r.text)
        # Signed by a key the issuer does not publish.
        forged = jwt.encode(sa_claims(issuer), SigningKey("key-1").private, algorithm="RS256",
                            headers={"kid": "key-1"})
        r = c.post("/api/v1/telemetry", json=report(1_764_000_200.0), headers=auth(forged))
        assert r.status_code == 401 and "signature does not verify" in r.json()["reason"]
        # A valid token of a service account the policy does not bind to a role with `report`.
        r = c.post("/api/v1/telemetry", json=report(1_764_000_200.0),
                   headers=auth(sa_token(issuer, "system:serviceaccount:research:default")))
        assert r.status_code == 403 and "may not report" in r.json()["reason"]


def test_an_issuer_that_refuses_the_gateway_makes_the_endpoint_unavailable(
        tmp_path: Path, policy_dir: Path, cluster_issuer: tuple[Issuer, Path]) -> None:
    issuer, ca = cluster_issuer
    (tmp_path / "sa-token").write_text("a-token-the-issuer-does-not-accept")
    served = start_server(tmp_path, "--agent-token-issuer", issuer.url, "--agent-token-audience", AUDIENCE,
                          "--agent-token-ca", str(ca), "--agent-token-bearer-file", str(tmp_path / "sa-token"),
                          tls=False, policy_dir=policy_dir)
    try:
        with served.client() as c:
            r = c.post("/api/v1/telemetry", json=report(1_764_000_000.0), headers=auth(sa_token(issuer)))
            assert r.status_code == 503 and "HTTP 401" in r.json()["reason"]
            # Without an admin authenticator the admin API stays off.
            assert c.get("/api/v1/whoami", headers=auth(sa_token(issuer))).status_code == 503
        assert issuer.refused_requests == 1
    finally:
        stop_server(served)


@pytest.mark.parametrize(("args", "message"), [
    (["--agent-token-issuer", "https://kubernetes.default.svc.cluster.local"], "go together"),
    (["--agent-token-issuer", "http://kubernetes.default.svc", "--agent-token-audience", "a"], "must use https"),
    (["--agent-token-issuer", "https://k8s.example", "--agent-token-audience", "a", "--oidc-issuer",
      "https://k8s.example", "--oidc-audience", "b"], "must differ"),
    (["--agent-token-issuer", "https://k8s.example", "--agent-token-audience", "a", "--agent-token-ca",
      "{tmp}/not-a-cert"], "as the issuer's CA"),
])
def test_bad_agent_token_flags_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "not-a-cert").write_text("garbage")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "serve", "--insecure-http",
                          "--host", "127.0.0.1", "--port", "1", "--state", str(tmp_path / "s.db"), *argv],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert not (tmp_path / "s.db").exists()


def test_an_off_origin_jwks_uri_is_only_followed_on_the_issuers_own_origin(cluster_issuer: tuple[Issuer, Path],
                                                                          tmp_path: Path) -> None:
    """Without the Kubernetes rewrite an off-origin jwks_uri is refused (the admin OIDC path)."""
    from gateway.auth.oidc import OidcKeys
    from gateway.errors import AuthUnavailable

    issuer, ca = cluster_issuer
    (tmp_path / "t").write_text(GATEWAY_SA_TOKEN)
    keys = OidcKeys(issuer.url, ca_file=ca, bearer_token_file=tmp_path / "t")
    with pytest.raises(AuthUnavailable, match="not on the issuer's origin"):
        keys.key_for({"alg": "RS256", "kid": "key-1"})
    rewritten = OidcKeys(issuer.url, ca_file=ca, bearer_token_file=tmp_path / "t", jwks_on_issuer_origin=True)
    assert rewritten.key_for({"alg": "RS256", "kid": "key-1"}) is not None
    with pytest.raises(httpx.ConnectError):  # the system trust store does not know the test CA
        httpx.get(issuer.url + "/keys", timeout=2)
