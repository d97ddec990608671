"""Group commit on the event loop: same decisions as one by one, caps hold, faults isolated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import INTERN, RESEARCHER, make_job, review, store_job

from gateway.admission.admission import Facts, Plan, decide
from gateway.admission.decision import Decision
from gateway.admission.policy import Policy
from gateway.service import AdmissionService
from gateway.store import sql
from gateway.store.sqlite import SQLiteStore
from gateway.store.writer import StoreWriter


async def _validate_all(service: AdmissionService, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    writer = StoreWriter(service.store)
    writer.start()
    try:
        return await asyncio.gather(*(service.validate_async(b, writer) for b in bodies))
    finally:
        writer.stop()


def test_concurrent_launches_never_exceed_the_users_cap(service: AdmissionService, store: SQLiteStore) -> None:
    bodies = [review(make_job(gpus=4).named("research", f"j{i}").obj(), user="alice", groups=INTERN).body()
              for i in range(40)]
    answers = asyncio.run(_validate_all(service, bodies))
    assert [a["response"]["uid"] for a in answers] == [b["request"]["uid"] for b in bodies]
    assert sum(a["response"]["allowed"] for a in answers) == 4  # 16-GPU intern cap / 4 GPUs each
    assert sum(r.gpus for r in store.reservations()) == 16
    result = store.verify()
    assert result.ok and result.rows == 40


def test_a_failing_job_in_a_batch_fails_alone(store: SQLiteStore, policy: Policy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def decide_or_fail(plan: Plan, policy: Policy, facts: Facts) -> Decision:
        if plan.request.name == "b":
            raise RuntimeError("bug in the decision")
        return decide(plan, policy, facts)

    monkeypatch.setattr(sql, "decide", decide_or_fail)
    outcomes = store.decide_batch([store_job(policy, "a"), store_job(policy, "b"), store_job(policy, "c")])
    a, b, c = outcomes
    assert isinstance(a, Decision) and a.allowed and isinstance(b, RuntimeError)
    assert isinstance(c, Decision) and c.allowed
    assert [r["name"] for r in store.audit_rows()] == ["a", "c"]
    assert {r.name for r in store.reservations()} == {"a", "c"}
    assert store.verify().ok


def test_a_job_failing_after_its_audit_record_leaves_the_chain_whole(store: SQLiteStore, policy: Policy,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Within a batch the chain's head is carried from record to record and written once: a job
    rolled back after appending its record takes the record and its step of the head with it."""
    write = sql.Ledger.write

    def write_or_fail(ledger: sql.Ledger, key: Any, decision: Decision, *args: Any, **kw: Any) -> None:
        if key[2] == "b":
            raise RuntimeError("disk trouble after the audit record")
        write(ledger, key, decision, *args, **kw)

    monkeypatch.setattr(sql.Ledger, "write", write_or_fail)
    outcomes = store.decide_batch([store_job(policy, n) for n in ("a", "b", "c", "d")])
    assert [isinstance(o, Decision) and o.allowed for o in outcomes] == [True, False, True, True]
    assert [r["name"] for r in store.audit_rows()] == ["a", "c", "d"]
    result = store.verify()
    assert result.ok and result.rows == 3
    # the next batch goes on from the head the last one wrote
    monkeypatch.setattr(sql.Ledger, "write", write)
    store.decide_batch([store_job(policy, "e")])
    assert store.verify().ok and [r["seq"] for r in store.audit_rows()] == [1, 2, 3, 4]


def test_a_database_error_after_a_jobs_writes_fails_that_job_alone_and_keeps_none_of_them(
        store: SQLiteStore, policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    """No job has a savepoint at first: b's failure rolls the batch back, and the others are
    decided again, each in a savepoint, where d fails alone. What the failed jobs wrote first
    (record, charge, usage) is gone; the others are decided as if alone, caps included, and
    their chain follows on."""
    write = sql.Ledger.write

    def write_then_refused(ledger: sql.Ledger, key: Any, decision: Decision, *args: Any, **kw: Any) -> None:
        write(ledger, key, decision, *args, **kw)
        if key[2] in ("b", "d"):
            ledger.db.run("INSERT INTO usage (scope, name, gpus) VALUES (?, ?, ?)", ("user", None, 1))

    monkeypatch.setattr(sql.Ledger, "write", write_then_refused)
    outcomes = store.decide_batch([store_job(policy, n) for n in ("a", "b", "c", "d", "e")])
    assert [isinstance(o, Decision) and o.allowed for o in outcomes] == [True, False, True, False, True]
    assert all("NOT NULL" in str(outcomes[i]) for i in (1, 3)), outcomes
    assert {r.name for r in store.reservations()} == {"a", "c", "e"}
    assert [r["name"] for r in store.audit_rows()] == ["a", "c", "e"]
    assert store.gpus_by_user() == {"x": 3}, "the usage counters hold the three jobs kept, and only them"
    assert store.verify().ok
    monkeypatch.setattr(sql.Ledger, "write", write)
    assert all(isinstance(o, Decision) for o in store.decide_batch([store_job(policy, "f")]))
    assert store.verify().ok and len(list(store.audit_rows())) == 4


def test_every_job_of_a_batch_failing_leaves_nothing(store: SQLiteStore, policy: Policy,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(plan: Plan, policy: Policy, facts: Facts) -> Decision:
        raise RuntimeError(f"bug deciding {plan.request.name}")

    monkeypatch.setattr(sql, "decide", fail)
    outcomes = store.decide_batch([store_job(policy, n) for n in ("a", "b", "c")])
    assert [str(o) for o in outcomes] == ["bug deciding a", "bug deciding b", "bug deciding c"]
    assert store.reservations() == [] and list(store.audit_rows()) == []


def test_a_closed_store_fails_every_queued_request_closed(service: AdmissionService, store: SQLiteStore) -> None:
    store.close()
    bodies = [review(make_job(gpus=1).named("research", f"j{i}").obj(), user="bob", groups=RESEARCHER).body()
              for i in range(3)]
    answers = asyncio.run(_validate_all(service, bodies))
    assert all(a["response"]["allowed"] is False and a["response"]["status"]["code"] == 500 for a in answers)
