"""Defined behaviour under faults (docs/faults.md), against the real server and real PostgreSQL.

A loopback TCP proxy (tests/tcp_proxy.py) sits between `gpu-gateway serve` and PostgreSQL
and makes the database slow, black-holed or refused while requests arrive.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import RESEARCHER, make_job, make_pod, review
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures
from served import Served, start_server, stop_server
from tcp_proxy import TcpProxy

BUDGET_MS = 600
#: The most a /validate may take: the budget, the commit grace (a quarter) and HTTP slack on a
#: busy machine; without the budget, one transaction through the slowed proxy takes over 5 s.
ANSWER_LIMIT_S = BUDGET_MS / 1000 * 1.25 + 1.5


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[TcpProxy]:  # noqa: F811
    p = TcpProxy(postgres.port)
    yield p
    p.close()


def _serve(tmp_path: Path, url: str, *extra: str) -> Served:
    return start_server(tmp_path, "--database-url", url, "--decision-budget-ms", str(BUDGET_MS), *extra, tls=False)


def _gpu_job(name: str, gpus: int = 1) -> dict[str, Any]:
    return review(make_job(gpus=gpus).named("research", name).obj(), user="bob", groups=RESEARCHER).body()


def _configmap(name: str) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "research"},
           "data": {"k": "v"}}
    return review(obj, user="bob", groups=RESEARCHER).body()


def _pod_with_volume(name: str) -> dict[str, Any]:
    pod = make_pod(gpus=0).named("research", name).obj()
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "shared-data"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return review(pod, user="bob", groups=RESEARCHER).body()


def _validate(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    r = client.post("/validate", json=body)
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    answer = r.json()["response"]
    assert answer["uid"] == body["request"]["uid"]
    return answer, elapsed


def _rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def _wait_for(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "audit", "verify", "--database-url", url],
                          capture_output=True, text=True, timeout=60)


def test_a_slow_database_is_answered_within_the_budget_and_a_late_commit_rolls_back(
        tmp_path: Path, pg_url: str, proxy: TcpProxy) -> None:  # noqa: F811
    served = _serve(tmp_path, proxy.url(pg_url))
    try:
        with served.client() as client:
            answer, _ = _validate(client, _gpu_job("before"))
            assert answer["allowed"] is True
            proxy.latency_s = 0.25  # every round trip a quarter second: a transaction takes seconds
            for i in range(3):
                answer, elapsed = _validate(client, _gpu_job(f"slow-{i}"))
                assert elapsed < ANSWER_LIMIT_S
                assert answer["allowed"] is False and answer["status"]["code"] == 500
                assert "failure mode closed" in answer["status"]["message"]
            # Objects without GPUs that do read the ledger are let through, unrecorded.
            for body in (_configmap("settings"), _pod_with_volume("notebook")):
                answer, elapsed = _validate(client, body)
                assert elapsed < ANSWER_LIMIT_S
                assert answer["allowed"] is True and "ledger is unavailable" in answer["warnings"][0]
            # The ready probe does not hang on the database either.
            started = time.monotonic()
            client.get("/readyz")
            assert time.monotonic() - started < ANSWER_LIMIT_S + 2
            proxy.heal()
            # The transactions the callers gave up on roll back: no reservation, no record.
            time.sleep(3)
            _wait_for(lambda: _validate(client, _gpu_job("after"))[0]["allowed"] is True)
            names = {r[0] for r in _rows(pg_url, "SELECT name FROM reservations")}
            assert "before" in names and "after" in names
            assert not {n for n in names if n.startswith("slow-")}
            audited = {r[0] for r in _rows(pg_url, "SELECT name FROM audit")}
            assert not {n for n in audited if n.startswith("slow-")}
            assert "settings" not in audited and "notebook" not in audited
            metrics = client.get("/metrics").text
            assert 'gpu_gateway_errors_total{kind="store"}' in metrics
    finally:
        proxy.heal()
        stop_server(served)
    assert _verify(pg_url).returncode == 0


def test_a_vanished_database_fails_open_when_so_configured_and_reconnects(
        tmp_path: Path, pg_url: str, proxy: TcpProxy) -> None:  # noqa: F811
    served = _serve(tmp_path, proxy.url(pg_url), "--failure-mode", "open")
    try:
        with served.client() as client:
            assert _validate(client, _gpu_job("before"))[0]["allowed"] is True
            proxy.blackhole()  # packets vanish: no reset, the connection just hangs
            for i in range(3):
                answer, elapsed = _validate(client, _gpu_job(f"dark-{i}"))
                assert elapsed < ANSWER_LIMIT_S
                assert answer["allowed"] is True and "failure mode open" in answer["warnings"][0]
            assert client.get("/healthz").status_code == 200
            proxy.refuse()  # then the database is down outright (connections reset and refused)
            answer, elapsed = _validate(client, _gpu_job("down"))
            assert elapsed < ANSWER_LIMIT_S and answer["allowed"] is True
            _wait_for(lambda: client.get("/readyz").status_code == 503)
            proxy.heal()
            # It reconnects by itself: ready again, and GPU requests recorded again.
            _wait_for(lambda: client.get("/readyz").status_code == 200)
            _wait_for(lambda: "warnings" not in _validate(client, _gpu_job("back"))[0])
            names = {r[0] for r in _rows(pg_url, "SELECT name FROM reservations")}
            assert {"before", "back"} <= names and not {n for n in names if n.startswith("dark-")}
    finally:
        proxy.heal()
        stop_server(served)
    assert _verify(pg_url).returncode == 0


def test_sigterm_fails_readiness_first_then_answers_every_request_in_flight(
        tmp_path: Path, pg_url: str, proxy: TcpProxy) -> None:  # noqa: F811
    served = start_server(tmp_path, "--database-url", proxy.url(pg_url), "--decision-budget-ms", "20000",
                          "--shutdown-delay", "3", tls=False)
    proxy.latency_s = 0.02  # keep the requests in flight while the signal arrives
    answers: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def send(i: int) -> None:
        try:
            with served.client() as client:
                answers.append(_validate(client, _gpu_job(f"flight-{i}"))[0])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    served.proc.send_signal(signal.SIGTERM)
    with served.client() as client:
        _wait_for(lambda: client.get("/readyz").status_code == 503, timeout_s=2.5)
        assert client.get("/readyz").text == "shutting down"
        late, _ = _validate(client, _gpu_job("during-delay"))  # still served during the delay
    for t in threads:
        t.join(timeout=60)
    assert served.proc.wait(timeout=30) == 0
    assert not failures and len(answers) == 12
    allowed = sum(a["allowed"] for a in answers) + late["allowed"]
    assert all("status" not in a or a["status"]["code"] != 500 for a in answers)
    # Nothing half-written: every answer has its record, every admission its reservation.
    reserved = _rows(pg_url, "SELECT count(*) FROM reservations")[0][0]
    assert reserved == allowed
    audited = _rows(pg_url, "SELECT count(*) FROM audit WHERE action = 'launch'")[0][0]
    assert audited == 13
    assert _verify(pg_url).returncode == 0


def test_a_broken_policy_keeps_the_last_good_one_and_is_logged_counted_and_audited(
        tmp_path: Path, pg_url: str, policy_dir: Path) -> None:  # noqa: F811
    served = start_server(tmp_path, "--database-url", pg_url, tls=False, policy_dir=policy_dir)
    try:
        with served.client() as client:
            assert _validate(client, _gpu_job("before"))[0]["allowed"] is True
            (policy_dir / "limits.yaml").write_text("roles: [this is: not, valid")
            served.proc.send_signal(signal.SIGHUP)
            _wait_for(lambda: _rows(pg_url, "SELECT count(*) FROM audit WHERE action = 'policy-reload'")[0][0] > 0)
            [(decision, rule, reason)] = _rows(
                pg_url, "SELECT decision, rule, reason FROM audit WHERE action = 'policy-reload'")
            assert decision == "denied" and rule == "policy-reload" and "stays in force" in reason
            assert "limits.yaml" in reason
            metrics = client.get("/metrics").text
            assert "gpu_gateway_policy_reload_failures_total 1.0" in metrics
            assert "gpu_gateway_policy_ok 0.0" in metrics
            assert "policy reload failing" in client.get("/readyz").text
            # The last good policy still decides.
            assert _validate(client, _gpu_job("after"))[0]["allowed"] is True
    finally:
        stop_server(served)
    assert "policy reload failed" in (tmp_path / "server.log").read_text()
    assert _verify(pg_url).returncode == 0
