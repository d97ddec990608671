"""The decision budget in the store writer: a late job is abandoned and never committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.admission.decision import Decision
from gateway.store.sqlite import SQLiteStore
from gateway.store.types import Job
from gateway.store.writer import LateDecision, StoreWriter

_OK = Decision(allowed=True, rule="r", reason="", audited=True)
_FIELDS = {"request_uid": "u", "user": "x", "groups": "[]", "role": "", "action": "launch", "kind": "Job",
           "namespace": "n", "name": "a", "object_uid": "", "gpus": 1, "decision": "allowed", "mode": "enforce",
           "rule": "r", "reason": "", "policy_version": "v", "owner": "x", "team": ""}


def _job(name: str, delay_s: float = 0.0) -> Job:
    def decider(_: Any) -> Decision:
        time.sleep(delay_s)  # a decision that takes this long inside the transaction
        return _OK

    return Job(("jobs.batch", "n", name), "x", "", decider, lambda d: dict(_FIELDS, name=name),
               dry_run=False, now=1.0, request_uid=name)


@pytest.mark.parametrize("offload", [True, False])
def test_a_job_past_its_deadline_is_rolled_back_and_its_batch_mates_commit(store: SQLiteStore, offload: bool) -> None:
    async def run() -> list[Decision | BaseException]:
        writer = StoreWriter(store, offload=offload)
        writer.start()
        now = writer.clock()
        try:
            return await asyncio.gather(
                writer.submit(_job("slow", 0.3), deadline=now + 0.1),
                writer.submit(_job("patient"), deadline=now + 30),
                writer.submit(_job("unbounded")),
                return_exceptions=True)
        finally:
            await asyncio.to_thread(writer.close)

    started = time.monotonic()
    slow, patient, unbounded = asyncio.run(run())
    assert isinstance(slow, LateDecision)
    assert patient is _OK and unbounded is _OK
    assert time.monotonic() - started < 5
    assert [r["name"] for r in store.audit_rows()] == ["patient", "unbounded"]
    assert store.verify().ok


def test_the_caller_is_answered_at_its_deadline_while_the_writer_thread_is_busy(store: SQLiteStore) -> None:
    async def run() -> tuple[BaseException | Decision, float]:
        writer = StoreWriter(store, offload=True)
        writer.start()
        try:
            blocker = asyncio.ensure_future(writer.submit(_job("blocker", 0.8)))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            try:
                outcome: BaseException | Decision = await writer.submit(_job("queued"), deadline=writer.clock() + 0.2)
            except LateDecision as exc:
                outcome = exc
            elapsed = time.monotonic() - started
            assert await blocker is _OK
            return outcome, elapsed
        finally:
            await asyncio.to_thread(writer.close)

    outcome, elapsed = asyncio.run(run())
    assert isinstance(outcome, LateDecision) and elapsed < 0.5
    assert [r["name"] for r in store.audit_rows()] == ["blocker"]
