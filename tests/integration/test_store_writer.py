"""Group commit on the event loop: same decisions as one by one, caps hold, faults isolated."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import INTERN, RESEARCHER, make_job, review

from gateway.admission.decision import Decision
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore
from gateway.store.types import Job
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


def test_a_failing_job_in_a_batch_fails_alone(store: SQLiteStore) -> None:
    def boom(_: Any) -> Decision:
        raise RuntimeError("bug in a decider")

    ok = Decision(allowed=True, rule="r", reason="", audited=True)
    fields = {"request_uid": "u", "user": "x", "groups": "[]", "role": "", "action": "launch", "kind": "Job",
              "namespace": "n", "name": "a", "object_uid": "", "gpus": 1, "decision": "allowed", "mode": "enforce",
              "rule": "r", "reason": "", "policy_version": "v", "owner": "", "team": ""}

    def job(decider: Any, name: str) -> Job:
        return Job(("jobs.batch", "n", name), "x", "", decider, lambda d: dict(fields, name=name),
                   dry_run=False, now=1.0, request_uid=name)

    outcomes = store.decide_batch([job(lambda f: ok, "a"), job(boom, "b"), job(lambda f: ok, "c")])
    assert outcomes[0] is ok and isinstance(outcomes[1], RuntimeError) and outcomes[2] is ok
    assert [r["name"] for r in store.audit_rows()] == ["a", "c"]
    assert store.verify().ok


def test_a_closed_store_fails_every_queued_request_closed(service: AdmissionService, store: SQLiteStore) -> None:
    store.close()
    bodies = [review(make_job(gpus=1).named("research", f"j{i}").obj(), user="bob", groups=RESEARCHER).body()
              for i in range(3)]
    answers = asyncio.run(_validate_all(service, bodies))
    assert all(a["response"]["allowed"] is False and a["response"]["status"]["code"] == 500 for a in answers)
