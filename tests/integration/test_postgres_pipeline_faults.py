"""A request PostgreSQL refuses inside a pipelined batch, where the refusal surfaces at a read
of the same job rather than at the job's sync (`requeue`, `settle`, `use_approval` and
`pods_under` all read after writing).

In pipeline mode the server then skips every command up to the next Sync. Unless the batch
syncs before rolling back, the rollbacks themselves are skipped: every other person's
request in the batch fails, and the connection stays inside an aborted transaction, which
fails every later decision of the replica. Each of those is a test here.

The refusal is a division by zero run after the job's real writes, followed by a read.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import store_job
from postgres_server import pg_url, postgres  # noqa: F401 - fixtures

from gateway.admission.decision import Decision
from gateway.store import sql
from gateway.store.postgres import PostgresStore


def _refuse_then_read_for(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    write = sql.Ledger.write

    def write_refused_then_read(self: sql.Ledger, key: Any, decision: Any, old: Any, *, now: float,
                                request_uid: str) -> None:
        write(self, key, decision, old, now=now, request_uid=request_uid)
        if key[2].startswith(prefix):
            self.db.run("SELECT 1/0")  # a statement the database refuses, whose answer nobody reads
            self.db.one("SELECT 1 AS x")  # then a read in the same job: the refusal surfaces here

    monkeypatch.setattr(sql.Ledger, "write", write_refused_then_read)


@pytest.mark.parametrize("bad", [("bad",), ("bad", "bad2")])
def test_a_job_refused_at_a_read_fails_alone_in_a_pipelined_batch(pg_url: str, policy: Any,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  bad: tuple[str, ...]) -> None:
    store = PostgresStore(pg_url)
    try:
        _refuse_then_read_for(monkeypatch, "bad")
        names = ["a", *bad, "c"]
        outcomes = dict(zip(names, store.decide_batch([store_job(policy, n) for n in names]), strict=True))
        for name in ("a", "c"):
            assert isinstance(outcomes[name], Decision) and outcomes[name].allowed, (name, outcomes[name])
        assert all(isinstance(outcomes[n], BaseException) for n in bad)
        assert {r.name for r in store.reservations()} == {"a", "c"}
        assert store.verify().ok
    finally:
        store.close()


def test_a_replica_still_decides_after_a_batch_with_a_job_refused_at_a_read(pg_url: str, policy: Any,  # noqa: F811
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresStore(pg_url)
    try:
        _refuse_then_read_for(monkeypatch, "bad")
        store.decide_batch([store_job(policy, "a"), store_job(policy, "bad")])
        monkeypatch.undo()
        (later,) = store.decide_batch([store_job(policy, "later")])
        assert isinstance(later, Decision) and later.allowed, later
        assert store.verify().ok
    finally:
        store.close()


def test_a_batch_failing_outside_any_job_leaves_the_connection_ready(pg_url: str, policy: Any,  # noqa: F811
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal after the jobs (here, as the chain's head is written) aborts the pipeline,
    whose rollback is then skipped. The batch fails closed, and the connection must not carry
    the aborted transaction into the next batch: that one is decided."""
    store = PostgresStore(pg_url)
    try:
        def refused_flush(self: sql.Ledger) -> None:
            self.db.run("SELECT 1/0")
            self.db.one("SELECT 1 AS x")

        monkeypatch.setattr(sql.Ledger, "chain_flush", refused_flush)
        assert all(isinstance(o, BaseException) for o in store.decide_batch([store_job(policy, "a")]))
        monkeypatch.undo()
        (later,) = store.decide_batch([store_job(policy, "later")])
        assert isinstance(later, Decision) and later.allowed, later
        assert {r.name for r in store.reservations()} == {"later"} and store.verify().ok
    finally:
        store.close()
