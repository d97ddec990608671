"""The real server, as an operator runs it: `gpu-gateway serve` with TLS on loopback."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import INTERN, RESEARCHER, delete_review, make_job, make_pytorchjob, review
from served import Served, start_server, stop_server


@pytest.fixture
def server(tmp_path: Path, policy_dir: Path) -> Iterator[Served]:
    served = start_server(tmp_path, policy_dir=policy_dir)
    yield served
    if served.proc.poll() is None:
        stop_server(served)


def test_generated_self_signed_certificate_serves_tls_and_health(server: Served) -> None:
    with server.client() as c:
        assert c.get("/healthz").text == "ok"
        assert c.get("/readyz").status_code == 200
    with pytest.raises(httpx.ConnectError):  # an unverified client must not get through silently
        httpx.get(server.url + "/healthz", verify=True, timeout=2)


def test_validate_answers_the_admission_review_shape(server: Served) -> None:
    body = review(make_pytorchjob().obj(), user="alice", groups=INTERN).body()
    with server.client() as c:
        out = c.post("/validate", json=body).json()
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    resp = out["response"]
    assert resp["uid"] == body["request"]["uid"]
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403 and resp["status"]["reason"] == "Forbidden"
    assert "may launch at most 8 GPUs per workload; this one asks for 8000" in resp["status"]["message"]


def test_mutate_returns_a_base64_jsonpatch(server: Served) -> None:
    body = review(make_job(gpus=8).obj(), user="bob", groups=RESEARCHER).body()
    with server.client() as c:
        resp = c.post("/mutate", json=body).json()["response"]
    assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert {"op": "add", "path": "/metadata/annotations",
            "value": {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "vision"}} in ops


def test_warnings_reach_the_response(tmp_path: Path, policy_dir: Path) -> None:
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace("workload-gpu-limit: enforce", "workload-gpu-limit: warn"))
    served = start_server(tmp_path, policy_dir=policy_dir)
    try:
        body = review(make_job(gpus=8, parallelism=2).obj(), user="alice", groups=INTERN).body()
        with served.client() as c:
            resp = c.post("/validate", json=body).json()["response"]
        assert resp["allowed"] is True and resp["warnings"]
    finally:
        stop_server(served)


def test_bad_input_gets_a_clear_error_never_an_allow(server: Served) -> None:
    with server.client() as c:
        r = c.post("/validate", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        r = c.post("/validate", json={"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview",
                                      "request": {"uid": "x"}})
        assert r.status_code == 200 and r.json()["response"]["allowed"] is False
        assert "admission.k8s.io/v2" in r.json()["response"]["status"]["message"]
        r = c.post("/validate", json=[1, 2, 3])
        assert r.status_code == 400
        big = b'{"pad": "' + b"x" * (9 * 1024 * 1024) + b'"}'
        r = c.post("/validate", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_metrics_count_decisions(server: Served) -> None:
    with server.client() as c:
        c.post("/validate", json=review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())
        text = c.get("/metrics").text
    assert 'gpu_gateway_decisions_total{action="launch",decision="denied",rule="workload-gpu-limit"} 1.0' in text
    assert "gpu_gateway_request_seconds_bucket" in text


def test_state_survives_a_restart(tmp_path: Path, policy_dir: Path) -> None:
    job = make_job(gpus=8).named("research", "j").obj()
    served = start_server(tmp_path, policy_dir=policy_dir)
    with served.client() as c:
        assert c.post("/validate", json=review(job, user="bob", groups=RESEARCHER).body()).json()["response"]["allowed"]
    assert stop_server(served) == 0
    served = start_server(tmp_path, policy_dir=policy_dir)
    try:
        with served.client() as c:
            resp = c.post("/validate", json=delete_review(job, user="alice", groups=INTERN).body()).json()
        assert resp["response"]["allowed"] is False  # the owner is still known after the restart
    finally:
        stop_server(served)


def test_operator_supplied_certificate(tmp_path: Path, policy_dir: Path) -> None:
    from gateway.webhook.tls import ensure_self_signed

    cert, key = ensure_self_signed(tmp_path / "mine", ["127.0.0.1"])
    served = start_server(tmp_path, "--cert", str(cert), "--key", str(key), policy_dir=policy_dir)
    try:
        with served.client() as c:
            assert c.get("/healthz").status_code == 200
    finally:
        stop_server(served)


def test_policy_is_reloaded_on_sighup_and_a_broken_one_keeps_the_last_good(tmp_path: Path, policy_dir: Path) -> None:
    served = start_server(tmp_path, policy_dir=policy_dir)
    body = lambda: review(make_job(gpus=8, parallelism=2).obj(), user="alice", groups=INTERN).body()  # noqa: E731
    try:
        with served.client() as c:
            assert c.post("/validate", json=body()).json()["response"]["allowed"] is False
            limits = policy_dir / "limits.yaml"
            limits.write_text(limits.read_text().replace("max_gpus_per_workload: 8 ", "max_gpus_per_workload: 16 "))
            os.kill(served.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not c.post("/validate", json=body()).json()["response"]["allowed"]:
                assert time.monotonic() < deadline, "reload did not take effect"
                time.sleep(0.1)
            (policy_dir / "policy.csv").write_text("p, intern, launch\nthis is not csv policy,,,\n")
            limits.write_text("roles: [broken")
            os.kill(served.proc.pid, signal.SIGHUP)
            time.sleep(0.5)
            assert c.post("/validate", json=body()).json()["response"]["allowed"] is True  # last good in force
            assert "last good in force" in c.get("/readyz").text
            assert "gpu_gateway_policy_ok 0.0" in c.get("/metrics").text
    finally:
        stop_server(served)
    assert "policy reload failed" in (tmp_path / "server.log").read_text()


def test_insecure_http_is_refused_off_loopback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "serve", "--insecure-http",
                          "--host", "0.0.0.0", "--state", str(tmp_path / "s.db")], capture_output=True, text=True)
    assert out.returncode != 0 and "loopback" in out.stderr


def test_sigterm_stops_cleanly(server: Served) -> None:
    assert stop_server(server) == 0


def test_the_server_process_settles_its_heap_before_serving() -> None:
    """`settle_heap` (run once, before serving): the loaded heap frozen out of the collector's
    passes, young passes less often, the collector still on. In a child: it changes the process."""
    code = ("import gc; from gateway.server import GC_YOUNG_THRESHOLD, settle_heap; before = gc.get_freeze_count(); "
            "settle_heap(); print(before, gc.get_freeze_count() > 1000, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, "
            "gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True", "True", "True"]
