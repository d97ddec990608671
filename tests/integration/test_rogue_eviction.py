"""Evicting the pod of a rogue GPU process (limits.yaml `telemetry.evict_rogue_pods`).

The Kubernetes API is a small HTTP double on loopback that records the eviction requests
the gateway's kubernetes client sends and answers as the API server would (201, or 429 when
a PodDisruptionBudget forbids it). Every attempt is an audited `kill` with rule
`rogue-eviction`.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from conftest import POLICIES
from served import API_SECRET, bearer
from starlette.applications import Starlette
from starlette.routing import Mount
from telemetry_helpers import llm_admissions

from gateway.api.context import ApiContext
from gateway.api.telemetry import telemetry_routes
from gateway.audit.ports import AuditQuery
from gateway.auth import build_authenticator
from gateway.config import AuthSettings
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, compile_bundle
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore
from gateway.telemetry.eviction.evictor import KubernetesEvictor

AGENT = "system:serviceaccount:gpu-gateway:gpu-gateway-agent"


class _KubeApi(http.server.BaseHTTPRequestHandler):
    status = 201
    requests: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append((self.path, body))
        answer = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Success" if self.status < 300
                             else "Failure", "code": self.status}).encode()
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def kube_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KubeApi)
    _KubeApi.requests, _KubeApi.status = [], 201
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def servers() -> Iterator[list[uvicorn.Server]]:
    running: list[uvicorn.Server] = []
    yield running
    for server in running:
        server.should_exit = True


def _serve(app: Starlette, running: list[uvicorn.Server]) -> httpx.Client:
    """The app on a real uvicorn server on loopback, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    running.append(server)
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)


def _app(tmp_path: Path, kube_api: str, running: list[uvicorn.Server], *, evict: bool
         ) -> tuple[httpx.Client, SQLiteStore, Metrics]:
    from kubernetes import client

    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICIES, policy_dir)
    limits = yaml.safe_load((policy_dir / "limits.yaml").read_text())
    limits["telemetry"] = {**limits["telemetry"], "evict_rogue_pods": evict}
    (policy_dir / "limits.yaml").write_text(yaml.safe_dump(limits))
    store = SQLiteStore(tmp_path / "state.db")
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics())
    for body in llm_admissions():
        assert service.validate(body)["response"]["allowed"]
    (tmp_path / "jwt.secret").write_text(API_SECRET)
    auth = build_authenticator(AuthSettings(jwt_secret_file=tmp_path / "jwt.secret", jwt_issuer="local",
                                            jwt_audience="gpuctl"))
    bundle = compile_bundle(policy_dir)
    metrics = Metrics()
    ctx = ApiContext(auth, lambda: bundle.policy, store, metrics=metrics, telemetry=lambda: bundle.telemetry)
    evictor = KubernetesEvictor(client.ApiClient(client.Configuration(host=kube_api)))
    app = Starlette(routes=[Mount("/api/v1", routes=telemetry_routes(ctx, evictor=evictor))])
    return _serve(app, running), store, metrics


def _report(*processes: dict[str, Any]) -> dict[str, Any]:
    return {"node": "node-a", "samples": [{"uuid": "GPU-3", "ts": 1_764_000_000.0, "interval_s": 10,
                                           "utilization": 90, "processes": list(processes)}]}


MINER = {"pid": 6666, "used_memory_bytes": 2**30, "pod_uid": "u-1", "pod": {"namespace": "research", "name": "miner"}}
HOST = {"pid": 7777, "used_memory_bytes": 2**30}
WORKER = {"pid": 41001, "used_memory_bytes": 2**30, "pod": {"namespace": "research", "name": "llm-70b-worker-0"}}


def test_the_pod_of_a_rogue_process_is_evicted_and_the_eviction_audited(tmp_path: Path, kube_api: str,
                                                                         servers: list[uvicorn.Server]) -> None:
    http, store, metrics = _app(tmp_path, kube_api, servers, evict=True)
    answer = http.post("/api/v1/telemetry", json=_report(WORKER, MINER, HOST), headers=bearer(AGENT, []))
    assert answer.status_code == 200 and [a["kind"] for a in answer.json()["alerts"]] == ["rogue-gpu-process"] * 2
    assert [path for path, _ in _KubeApi.requests] == ["/api/v1/namespaces/research/pods/miner/eviction"]
    assert _KubeApi.requests[0][1]["metadata"] == {"name": "miner", "namespace": "research"}
    [kill] = list(store.audit_rows(AuditQuery(action="kill")))
    assert (kill["rule"], kill["decision"], kill["namespace"], kill["name"]) == (
        "rogue-eviction", "allowed", "research", "miner")
    assert metrics.evictions.labels("evicted")._value.get() == 1
    assert store.verify().ok


def test_a_refused_eviction_is_audited_as_denied(tmp_path: Path, kube_api: str,
                                                  servers: list[uvicorn.Server]) -> None:
    _KubeApi.status = 429  # a PodDisruptionBudget forbids it
    http, store, _ = _app(tmp_path, kube_api, servers, evict=True)
    assert http.post("/api/v1/telemetry", json=_report(MINER), headers=bearer(AGENT, [])).status_code == 200
    [kill] = list(store.audit_rows(AuditQuery(action="kill")))
    assert kill["decision"] == "denied" and "429" in kill["reason"]


def test_nothing_is_evicted_unless_the_policy_says_so(tmp_path: Path, kube_api: str,
                                                       servers: list[uvicorn.Server]) -> None:
    http, store, _ = _app(tmp_path, kube_api, servers, evict=False)
    assert http.post("/api/v1/telemetry", json=_report(MINER), headers=bearer(AGENT, [])).status_code == 200
    assert _KubeApi.requests == [] and list(store.audit_rows(AuditQuery(action="kill"))) == []
    assert [r["rule"] for r in store.audit_rows(AuditQuery(action="alert"))] == ["rogue-gpu-process"]


def test_only_identities_allowed_to_report_may_post_telemetry(tmp_path: Path, kube_api: str,
                                                               servers: list[uvicorn.Server]) -> None:
    http, _, _ = _app(tmp_path, kube_api, servers, evict=True)
    refused = http.post("/api/v1/telemetry", json=_report(MINER), headers=bearer("bob", ["gpu-researchers"]))
    assert refused.status_code == 403 and "may not report" in refused.json()["reason"]
    assert http.post("/api/v1/telemetry", json=_report(MINER)).status_code == 401
    bad = http.post("/api/v1/telemetry", json={"node": "n", "samples": [{"uuid": "G", "ts": -1}]},
                    headers=bearer(AGENT, []))
    assert bad.status_code == 400 and "samples[0].ts" in bad.json()["reason"]
    assert _KubeApi.requests == []
