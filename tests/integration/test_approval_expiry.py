"""Approvals that run out unused are on the record: each gets one audit record when the gateway
next looks (as expired break-glass grants do), on SQLite, on PostgreSQL and through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import INTERN, review
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures
from served import bearer, start_api_server, stop_server

from gateway.admission.ports import Actor
from gateway.store.approvals import StateConflict
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from integration.test_approvals import Clock, answer, approve, ask, big_launch, service_on

LEAD = Actor("erin", ("gpu-leads", "team:vision"), "lead")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def expiries(store: Store) -> list[dict[str, Any]]:
    return [r for r in store.audit_rows() if r["action"] == "approval" and
            any(c["new"] == "expired" for c in r["changes"])]


def lapse(store: Store, clock: Clock, policy_dir: Path) -> None:
    """Four approvals, two of which run out unused; then the webhook decides a request after that."""
    service = service_on(store, policy_dir, clock)
    pending = ask(store, clock, name="never-reviewed", expires_in_s=60)
    approved = ask(store, clock, name="never-used", expires_in_s=60)
    approve(store, clock, approved)
    denied = ask(store, clock, name="refused", expires_in_s=60)
    store.review_approval(denied, "denied", LEAD, "no", now=clock())
    used = ask(store, clock, expires_in_s=60)
    approve(store, clock, used)
    assert answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    clock.now += 61
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]

    records = sorted(expiries(store), key=lambda r: str(r["name"]))  # both expired at the same instant
    assert [(r["object_uid"], r["user"], r["role"], r["changes"][0]["old"]) for r in records] == [
        (pending, "gpu-gateway", "system", "pending"), (approved, "gpu-gateway", "system", "approved")]
    assert "expired before anyone reviewed it" in records[0]["reason"]
    assert records[1]["reason"] == (f"approval {approved} (launch of pytorchjob research/never-used for alice) "
                                    "expired unused")
    assert [(r["owner"], r["name"], r["ts"]) for r in records] == [
        ("alice", "pytorchjob/never-reviewed", clock.now), ("alice", "pytorchjob/never-used", clock.now)]
    states = {a["id"]: a["state"] for a in store.approvals(now=clock())}
    assert states == {pending: "expired", approved: "expired", denied: "denied", used: "used"}

    clock.now += 5  # looked at again: nothing new on the record
    answer(service, review(big_launch(), user="alice", groups=INTERN).body())
    store.live_grants(now=clock())
    assert len(expiries(store)) == 2
    assert store.verify().ok


def test_expired_approvals_are_audited_once(store: Store, policy_dir: Path, clock: Clock) -> None:
    lapse(store, clock, policy_dir)


def test_an_expired_approval_can_no_longer_be_reviewed(store: Store, policy_dir: Path, clock: Clock) -> None:
    approval = ask(store, clock, expires_in_s=60)
    clock.now += 60
    store.live_grants(now=clock())
    with pytest.raises(StateConflict, match="is expired, not pending"):
        store.review_approval(approval, "approved", LEAD, "", now=clock())
    assert len(expiries(store)) == 1


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:  # noqa: F811
    s = PostgresStore(pg_url)
    yield s
    s.close()


def test_expired_approvals_are_audited_once_on_postgres(pg_store: PostgresStore, policy_dir: Path,
                                                         clock: Clock) -> None:
    lapse(pg_store, clock, policy_dir)


def test_through_a_real_server(tmp_path: Path) -> None:
    served = start_api_server(tmp_path)
    try:
        alice, root = bearer("alice", list(INTERN)), bearer("root", ["gpu-admins"])
        with served.client() as c:
            created = c.post("/api/v1/approvals", headers=alice, json={
                "action": "launch", "kind": "Job", "namespace": "research", "name": "quick", "gpus": 32,
                "reason": "a short window", "expires_in_s": 0.5}).json()
            time.sleep(0.7)
            items = c.get("/api/v1/audit", params={"action": "approval"}, headers=root).json()["items"]
            assert [(i["object_uid"], i["changes"][0]["new"]) for i in items] == [
                (created["id"], "pending"), (created["id"], "expired")]
            assert c.get(f"/api/v1/approvals/{created['id']}", headers=alice).json()["state"] == "expired"
            assert c.get("/api/v1/audit/verify", headers=root).json()["ok"] is True
    finally:
        stop_server(served)
