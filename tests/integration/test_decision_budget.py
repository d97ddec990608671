"""The decision budget in the store writer: a late job is abandoned and never committed."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import store_job

from gateway.admission.admission import Facts, Plan, decide
from gateway.admission.decision import Decision
from gateway.admission.policy import Policy
from gateway.store import sql
from gateway.store.sqlite import SQLiteStore
from gateway.store.types import Job
from gateway.store.writer import LateDecision, StoreWriter

#: How long deciding each request takes inside the transaction, by name (default none).
DELAYS_S = {"slow": 0.3, "blocker": 0.8}


@pytest.fixture(autouse=True)
def slow_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    def decide_slowly(plan: Plan, policy: Policy, facts: Facts) -> Decision:
        time.sleep(DELAYS_S.get(plan.request.name, 0.0))
        return decide(plan, policy, facts)

    monkeypatch.setattr(sql, "decide", decide_slowly)


def _job(policy: Policy, name: str) -> Job:
    return store_job(policy, name)


def _allowed(outcome: object) -> bool:
    return isinstance(outcome, Decision) and outcome.allowed


@pytest.mark.parametrize("offload", [True, False])
def test_a_job_past_its_deadline_is_rolled_back_and_its_batch_mates_commit(store: SQLiteStore, policy: Policy,
                                                                           offload: bool) -> None:
    async def run() -> list[Decision | BaseException]:
        writer = StoreWriter(store, offload=offload)
        writer.start()
        now = writer.clock()
        try:
            return await asyncio.gather(
                writer.submit(_job(policy, "slow"), deadline=now + 0.1),
                writer.submit(_job(policy, "patient"), deadline=now + 30),
                writer.submit(_job(policy, "unbounded")),
                return_exceptions=True)
        finally:
            await asyncio.to_thread(writer.close)

    started = time.monotonic()
    slow, patient, unbounded = asyncio.run(run())
    assert isinstance(slow, LateDecision)
    assert _allowed(patient) and _allowed(unbounded)
    assert time.monotonic() - started < 5
    assert [r["name"] for r in store.audit_rows()] == ["patient", "unbounded"]
    assert store.verify().ok


def test_the_caller_is_answered_at_its_deadline_while_the_writer_thread_is_busy(store: SQLiteStore,
                                                                                 policy: Policy) -> None:
    async def run() -> tuple[BaseException | Decision, float]:
        writer = StoreWriter(store, offload=True)
        writer.start()
        try:
            blocker = asyncio.ensure_future(writer.submit(_job(policy, "blocker")))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            try:
                outcome: BaseException | Decision = await writer.submit(_job(policy, "queued"),
                                                                        deadline=writer.clock() + 0.2)
            except LateDecision as exc:
                outcome = exc
            elapsed = time.monotonic() - started
            assert _allowed(await blocker)
            return outcome, elapsed
        finally:
            await asyncio.to_thread(writer.close)

    outcome, elapsed = asyncio.run(run())
    assert isinstance(outcome, LateDecision) and elapsed < 0.5
    assert [r["name"] for r in store.audit_rows()] == ["blocker"]
