"""The PostgreSQL store, against a real server started for the session (tests/postgres_server.py):
the admission flow, tamper evidence, caps across processes, `serve --database-url`, the
`usage` command, and failing closed while the database is down."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import INTERN, POLICIES, RESEARCHER, delete_review, make_job, review, store_job
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures
from served import start_server, stop_server

from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store import sql
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:  # noqa: F811
    store = PostgresStore(pg_url)
    yield store
    store.close()


def service_on(store: Any, policy_dir: Path = POLICIES) -> AdmissionService:
    return AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics())


def launch(service: AdmissionService, name: str, *, gpus: int, user: str = "alice",
           groups: tuple[str, ...] = INTERN) -> dict[str, Any]:
    obj = make_job(gpus=gpus).named("research", name).obj()
    return service.validate(review(obj, user=user, groups=groups).body())["response"]


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", *args],
                          capture_output=True, text=True, timeout=60)


def test_launch_quota_denial_and_kill_release(pg_store):
    service = service_on(pg_store)
    assert launch(service, "a", gpus=8)["allowed"] is True
    assert launch(service, "b", gpus=8)["allowed"] is True
    denied = launch(service, "c", gpus=8)
    assert denied["allowed"] is False
    assert "16" in denied["status"]["message"]
    assert pg_store.gpus_by_user() == {"alice": 16}

    old = make_job(gpus=8).named("research", "a").owned_by("alice", "vision").obj()
    assert service.validate(delete_review(old, user="alice", groups=INTERN).body())["response"]["allowed"]
    assert sorted(r.name for r in pg_store.reservations()) == ["b"]
    assert launch(service, "c", gpus=8)["allowed"] is True
    assert pg_store.gpus_by_team() == {"vision": 16}
    assert pg_store.verify().ok and pg_store.verify().rows == 5
    assert [r["decision"] for r in pg_store.audit_rows()] == ["allowed", "allowed", "denied", "allowed", "allowed"]


def test_audit_verify_names_a_tampered_record(pg_store, pg_url):  # noqa: F811
    service = service_on(pg_store)
    for name in ("a", "b", "c"):
        launch(service, name, gpus=8)
    assert gateway_cli("audit", "verify", "--database-url", pg_url).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 2")
    assert pg_store.verify().first_bad == 2
    out = gateway_cli("audit", "verify", "--database-url", pg_url, "-o", "json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["first_bad"] == 2
    listed = gateway_cli("audit", "list", "--database-url", pg_url, "--decision", "denied", "-o", "json")
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["c"]


def test_audit_commands_want_exactly_one_store():
    assert gateway_cli("audit", "verify").returncode == 2
    assert gateway_cli("audit", "verify", "--state", "x.db", "--database-url", "postgresql://x@127.0.0.1/x"
                       ).returncode == 2


def _admit_many(url: str, worker: int, count: int) -> list[bool]:
    """One replica: its own store, `count` 64-GPU launches by bob (researcher cap: 1,024)."""
    store = PostgresStore(url)
    try:
        service = service_on(store)
        return [launch(service, f"w{worker}-{i}", gpus=64, user="bob", groups=RESEARCHER)["allowed"]
                for i in range(count)]
    finally:
        store.close()


def test_replicas_in_separate_processes_never_exceed_a_cap(pg_store, pg_url):  # noqa: F811
    workers, each = 4, 10
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.starmap(_admit_many, [(pg_url, w, each) for w in range(workers)])
    allowed = sum(sum(r) for r in results)
    assert allowed == 1024 // 64
    assert pg_store.gpus_by_user() == {"bob": 1024}
    assert sum(r.gpus for r in pg_store.reservations()) == 1024
    result = pg_store.verify()
    assert result.ok, result.describe()
    assert result.rows == workers * each


def test_serve_with_a_database_url_answers_validate(tmp_path, pg_url):  # noqa: F811
    served = start_server(tmp_path, "--database-url", pg_url, tls=False)
    try:
        body = review(make_job(gpus=8).named("research", "served").obj(), user="bob", groups=RESEARCHER).body()
        with served.client() as client:
            answer = client.post("/validate", json=body).json()["response"]
    finally:
        stop_server(served)
    assert answer["allowed"] is True
    assert not served.state.exists()
    store = PostgresStore(pg_url, readonly=True)
    try:
        assert [(r.name, r.owner, r.gpus) for r in store.reservations()] == [("served", "bob", 8)]
    finally:
        store.close()


def test_usage_prints_gpus_per_user_and_team(pg_store, pg_url, tmp_path):  # noqa: F811
    sqlite = SQLiteStore(tmp_path / "state.db")
    for store in (pg_store, sqlite):
        service = service_on(store)
        launch(service, "a", gpus=8)
        launch(service, "b", gpus=64, user="bob", groups=RESEARCHER)
    sqlite.close()
    expected = {"users": {"alice": 8, "bob": 64}, "teams": {"vision": 72}}
    for source in (["--database-url", pg_url], ["--state", str(tmp_path / "state.db")]):
        out = gateway_cli("usage", *source, "-o", "json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == expected
    table = gateway_cli("usage", "--database-url", pg_url).stdout.splitlines()
    assert table[0].split() == ["SCOPE", "NAME", "GPUS"]
    assert [line.split() for line in table[1:]] == [["user", "bob", "64"], ["user", "alice", "8"],
                                                    ["team", "vision", "72"]]


def test_a_closed_port_is_a_store_error():
    with pytest.raises(StoreError):
        PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=2)


def test_database_down_fails_closed_and_recovers(postgres: PostgresServer, pg_store):  # noqa: F811
    service = service_on(pg_store)
    assert launch(service, "before", gpus=8)["allowed"] is True
    postgres.stop()
    try:
        down = launch(service, "during", gpus=8)
        assert down["allowed"] is False
        assert down["status"]["code"] == 500
        assert service.ready()[0] is False
    finally:
        postgres.start()
    assert launch(service, "after", gpus=8)["allowed"] is True
    assert sorted(r.name for r in pg_store.reservations()) == ["after", "before"]
    assert pg_store.verify().rows == 2


def test_check_reads_what_is_in_use_from_postgresql_and_writes_nothing(pg_store, pg_url, tmp_path):  # noqa: F811
    service = service_on(pg_store)
    assert launch(service, "a", gpus=8)["allowed"] and launch(service, "b", gpus=8)["allowed"]
    records = len(list(pg_store.audit_rows()))
    manifest = tmp_path / "c.json"
    manifest.write_text(json.dumps(make_job(gpus=8).named("research", "c").obj()))
    out = gateway_cli("check", "--user", "alice", "--group", INTERN[0], "--group", INTERN[1], "-f", str(manifest),
                      "--database-url", pg_url, "-o", "json")
    assert out.returncode == 1, out.stderr
    [result] = [json.loads(line) for line in out.stdout.splitlines()]
    assert (result["rule"], result["usage_read"]) == ("user-quota", True)
    assert result["reason"] == launch(service, "c", gpus=8)["status"]["message"]
    assert [(c["rule"], c["used"], c["limit"]) for c in result["caps"]] == [
        ("workload-gpu-limit", None, 8), ("user-quota", 16, 16), ("team-quota", 16, None)]
    assert len(list(pg_store.audit_rows())) == records + 1  # the launch's own record, none for the check


def test_a_batch_carries_the_chain_head_and_a_failed_job_takes_its_record_back(pg_store, policy, monkeypatch):
    """As on SQLite (test_store_writer): the head is read once per batch and written once; a job
    that fails after appending its record (the batch rolled back and decided again without it)
    leaves no gap in the chain."""
    write = sql.Ledger.write

    def write_or_fail(ledger, key, decision, *args, **kw):
        if key[2] == "b":
            raise RuntimeError("trouble after the audit record")
        write(ledger, key, decision, *args, **kw)

    monkeypatch.setattr(sql.Ledger, "write", write_or_fail)
    outcomes = pg_store.decide_batch([store_job(policy, n) for n in ("a", "b", "c")])
    assert [getattr(o, "allowed", False) for o in outcomes] == [True, False, True]
    assert [r["name"] for r in pg_store.audit_rows()] == ["a", "c"]
    result = pg_store.verify()
    assert result.ok and result.rows == 2


def test_a_database_error_in_a_pipelined_write_fails_its_own_job_alone(pg_store, policy, monkeypatch):
    """The batch runs in pipeline mode: a write's error reaches the client only at the next sync.
    Each job ends with one, so a statement PostgreSQL refuses in job b fails b alone (the batch
    rolled back and decided again without it: its audit record goes too), and a and c are
    decided and committed."""
    write = sql.Ledger.write

    def write_then_refused(ledger, key, decision, *args, **kw):
        write(ledger, key, decision, *args, **kw)
        if key[2] == "b":
            ledger.db.run("INSERT INTO usage (scope, name, gpus) VALUES (?, ?, ?)", ("user", None, 1))

    monkeypatch.setattr(sql.Ledger, "write", write_then_refused)
    outcomes = pg_store.decide_batch([store_job(policy, n) for n in ("a", "b", "c")])
    assert [getattr(o, "allowed", False) for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1], StoreError) and "null value" in str(outcomes[1]), outcomes[1]
    assert [r["name"] for r in pg_store.audit_rows()] == ["a", "c"]
    assert {r.name for r in pg_store.reservations()} == {"a", "c"}
    result = pg_store.verify()
    assert result.ok and result.rows == 2
    monkeypatch.setattr(sql.Ledger, "write", write)
    assert getattr(pg_store.decide_batch([store_job(policy, "d")])[0], "allowed", False), "the connection is sound"


def test_what_still_runs_stays_charged_on_postgresql(pg_store: PostgresStore) -> None:
    """The ledger's hold of a force-deleted pod, the charge a deleted root's pods take over, and
    the deleted root's UID refusing a stale child, on PostgreSQL as on SQLite."""
    from cluster_sim import GC, SYSTEM, Cluster

    from integration.test_insider_attacks import delete, deployment, held, pods_of
    from integration.test_insider_attacks_more import force_delete, scheduled

    cluster = Cluster(service_on(pg_store))
    made = cluster.create(deployment("serve"), "alice", INTERN)
    assert made.allowed, made.message
    rs = cluster.replicaset_of(made.obj, replicas=1).obj
    [pod] = pods_of(cluster, rs, 1)
    name = pod.obj["metadata"]["name"]
    scheduled(cluster, name)
    assert force_delete(cluster, name, "alice", INTERN)
    assert not pods_of(cluster, rs, 1)[0].allowed, "the forced pod's containers still hold the root's 8 GPUs"
    assert delete(cluster, "Deployment", "serve", "alice", INTERN).allowed
    assert held(pg_store) == {"alice": 8}, "the pod still running took over the deleted root's charge"
    assert delete(cluster, "ReplicaSet", rs["metadata"]["name"], GC, SYSTEM).allowed
    stale = cluster.replicaset_of(made.obj, replicas=1)  # a stale cache's, for the deleted Deployment
    assert not stale.allowed and "was deleted" in stale.message, stale.message
