"""Queue mode on PostgreSQL (a real server, tests/postgres_server.py): several OS processes admit
queue-mode launches and run queue passes at the same time against one cap; the cap holds, every
launch is either charged or still waiting, and the audit chain is one valid chain."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from builders_queue import ACTOR, queue_policies
from conftest import RESEARCHER, make_job, review
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.ports import limits_from
from gateway.service import AdmissionService
from gateway.store.postgres import PostgresStore


def _admit_and_schedule(url: str, policy_dir: str, worker: int, each: int) -> tuple[int, int]:
    """One replica: `each` queue-mode launches of 8 GPUs, a queue pass after each."""
    store = PostgresStore(url)
    service = AdmissionService(PolicyHolder(Path(policy_dir)), store, metrics=Metrics())
    limits = limits_from(service.policies.policy)
    queued = released = 0
    try:
        for i in range(each):
            job = make_job(gpus=8, parallelism=1).named("research", f"w{worker}-{i}").obj()
            answer = service.validate(review(job, user="bob", groups=RESEARCHER).body())["response"]
            queued += bool(answer["allowed"])
            result = store.run_queue(limits, now=time.time(), actor=ACTOR)
            released += len(result.plan.released)
    finally:
        store.close()
    return queued, released


def test_concurrent_replicas_queue_and_release_without_breaking_the_cap(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    policy_dir = queue_policies(tmp_path / "policies")  # researchers queue; 32 GPUs per researcher
    PostgresStore(pg_url).close()  # create the schema once, before the race
    workers, each = 4, 6
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.starmap(_admit_and_schedule, [(pg_url, str(policy_dir), w, each) for w in range(workers)])
    store = PostgresStore(pg_url)
    try:
        assert sum(q for q, _ in results) == workers * each  # every launch admitted to the queue
        released = sum(r for _, r in results)
        assert released == 32 // 8  # exactly as many as the cap allows, however the passes interleaved
        assert store.gpus_by_user() == {"bob": 32}
        charged = [r for r in store.reservations() if r.charged]
        assert sum(r.gpus for r in charged) == 32
        assert len(store.queue_rows()) == workers * each - released
        assert {r.name for r in charged}.isdisjoint({q["name"] for q in store.queue_rows()})
        result = store.verify()
        assert result.ok, result.describe()
        assert result.rows == workers * each + released  # one "queued" and one "queue-release" record each
    finally:
        store.close()
