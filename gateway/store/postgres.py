"""PostgreSQL backend: one database shared by several gateway replicas.

The statements are those of the SQLite store (`gateway.store.sql`). Every write
transaction first takes one transaction-scoped advisory lock, so the deciders of all
replicas run one at a time: the facts, the cap check, the audit append and the
reservation change are atomic across processes, and the audit log stays one chain.
Reads take no lock. A failed connection is dropped and a new one made on the next call;
every psycopg error surfaces as a StoreError, to which the service applies the failure mode.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from gateway.admission.admission import Facts, TargetKey
from gateway.admission.decision import Decision
from gateway.admission.ports import LedgerRow
from gateway.audit.ports import AuditQuery, VerifyResult
from gateway.errors import StoreError
from gateway.store.approvals import ApprovalsSQL
from gateway.store.batch import JobFailed, Outcome, decide_each, decide_jobs
from gateway.store.events import EventsSQL
from gateway.store.migrations import POSTGRES, Row
from gateway.store.queue import QueueSQL
from gateway.store.schema import prepare
from gateway.store.settings import SettingsSQL
from gateway.store.sql import Ledger
from gateway.store.telemetry import TelemetrySQL
from gateway.store.types import Job

log = logging.getLogger("gateway.store")

#: The advisory lock every write transaction holds: "gpugate" in ASCII.
WRITE_LOCK = 0x67707567617465

_T = TypeVar("_T")


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """A shared statement with psycopg's placeholders (the statements hold no literal `?` or `%`)."""
    return sql.replace("?", "%s")


class _Runner:
    """`sql.Runner` over one psycopg connection, through one cursor: each statement's result
    is read, if at all, before the next one runs (a new cursor per statement cost about as
    much as the statement's own client-side work)."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self._cursor = conn.cursor()

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return self._cursor.execute(_pg(sql), tuple(args)).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self._cursor.execute(_pg(sql), tuple(args)).fetchall())

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._cursor.execute(_pg(sql), tuple(args))


class PostgresStore(ApprovalsSQL, SettingsSQL, TelemetrySQL, QueueSQL, EventsSQL):
    """The shared store. Safe to share between threads; one connection, used under a lock."""

    def __init__(self, url: str, *, readonly: bool = False, connect_timeout_s: int = 5,
                 statement_timeout_ms: int = 10_000) -> None:
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        if not readonly:
            self._with_ledger(self._create_schema, "cannot create the schema")

    # ------------------------------------------------------------- connection

    def _ledger(self) -> tuple[psycopg.Connection[dict[str, Any]], Ledger]:
        """The live connection (made anew after a failure) and a ledger over it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            # Keepalives and a TCP user timeout: a database host that vanishes (no reset) breaks
            # the connection in about 10 s instead of the kernel's many minutes (docs/faults.md).
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                         connect_timeout=self._connect_timeout_s, keepalives=1,
                                         keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                                         tcp_user_timeout=10_000)
            self._conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")
        return self._conn, Ledger(_Runner(self._conn))

    def _with_ledger(self, work: Callable[[Ledger], _T], what: str) -> _T:
        """Run `work` on the ledger; a database error becomes a StoreError and drops a broken connection."""
        with self._lock:
            try:
                _, ledger = self._ledger()
                return work(ledger)
            except psycopg.Error as exc:
                self._discard_if_broken()
                raise StoreError(f"{what}: PostgreSQL: {exc}") from exc

    def _discard_if_broken(self) -> None:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None

    def _create_schema(self, ledger: Ledger) -> None:
        """Upgrade the tables (replicas may start together: under the write lock) and recount usage."""
        with _Transaction(ledger):
            moved = prepare(ledger.db, POSTGRES)
        for subject, (old, new) in moved.items():
            if old:
                log.info("PostgreSQL: %s tables upgraded from schema version %d to %d", subject, old, new)

    def _read(self, work: Callable[[Ledger], _T]) -> _T:
        return self._with_ledger(work, "cannot read approvals or grants")

    def _write(self, work: Callable[[Ledger], _T]) -> _T:
        def transaction(ledger: Ledger) -> _T:
            with _Transaction(ledger):
                return work(ledger)
        return self._with_ledger(transaction, "cannot write approvals or grants")

    # ------------------------------------------------------------- reads

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True) -> Facts:
        return self._with_ledger(lambda ledger: ledger.facts(key, owner, team, references, usage=usage),
                                 "cannot read the ledger")

    def preview(self, job: Job) -> tuple[Decision, Facts]:
        def snapshot(ledger: Ledger) -> tuple[Decision, Facts]:
            ledger.db.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return ledger.preview(job)
            finally:
                ledger.db.run("ROLLBACK")
        return self._with_ledger(snapshot, "cannot read the ledger")

    # ------------------------------------------------------------- the write path

    def decide_batch(self, jobs: Sequence[Job], *,
                     ready_to_commit: Callable[[], bool] | None = None) -> list[Decision | BaseException]:
        """Decide several requests in one transaction, in order; a job that fails fails alone
        (`gateway.store.batch`). If the transaction itself fails (connection lost, timeout) or
        `ready_to_commit` refuses the commit, every job fails with a StoreError.
        """
        try:
            return self._with_ledger(
                lambda ledger: decide_each(jobs, lambda live, isolate: self._try_batch(ledger, live, ready_to_commit,
                                                                                       isolate)),
                "cannot decide")
        except StoreError as exc:
            return [exc for _ in jobs]

    def _try_batch(self, ledger: Ledger, jobs: Sequence[Job], ready_to_commit: Callable[[], bool] | None,
                   isolate: bool) -> list[Outcome] | JobFailed:
        """One transaction over `jobs` (`gateway.store.batch.decide_jobs`), in pipeline mode: the
        statements whose results nobody reads (BEGIN, the lock, the writes) go out with the next
        read or sync instead of a round trip each, and each job ends with a sync, so that an
        error is known to be its own."""
        assert self._conn is not None
        try:
            with self._conn.pipeline() as pipeline, _Transaction(ledger):
                ledger.chain_begin()
                try:
                    decisions = decide_jobs(ledger, jobs, isolate=isolate, sync=pipeline.sync, error=_job_error)
                    if isinstance(decisions, JobFailed):
                        raise _Failed(decisions)
                    ledger.chain_flush()
                finally:
                    ledger.chain_discard()
                if ready_to_commit is not None and not ready_to_commit():
                    raise _NotCommitted()
                return decisions
        except _Failed as failed:  # rolled back by _Transaction
            return failed.job
        finally:
            self._leave_no_transaction()

    def _leave_no_transaction(self) -> None:
        """No connection stays inside a transaction after a batch (an aborted one would refuse
        every later statement): roll it back, or drop the connection if that fails too."""
        conn = self._conn
        if conn is None or conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error as exc:
            log.warning("dropping a PostgreSQL connection left inside a transaction: %s", exc)
            conn.close()
            self._conn = None

    # ------------------------------------------------------------- audit

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]:
        yield from self._with_ledger(lambda ledger: ledger.audit_rows(query or AuditQuery()),
                                     "cannot read the audit log")

    def verify(self) -> VerifyResult:
        """Walk the chain as of one snapshot, so that records other replicas append meanwhile
        do not look like a mismatch with the head."""
        def walk(ledger: Ledger) -> VerifyResult:
            ledger.db.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return ledger.verify()
            finally:
                ledger.db.run("COMMIT")

        try:
            return self._with_ledger(walk, "cannot read the audit log")
        except StoreError as exc:
            return VerifyResult(False, 0, 1, str(exc))

    # ------------------------------------------------------------- ledger views

    def reservations(self) -> list[LedgerRow]:
        return self._with_ledger(lambda ledger: ledger.reservations(), "cannot read the ledger")

    def gpus_by_team(self) -> dict[str, int]:
        return self._with_ledger(lambda ledger: ledger.gpus_by_scope("team"), "cannot read the ledger")

    def gpus_by_user(self) -> dict[str, int]:
        return self._with_ledger(lambda ledger: ledger.gpus_by_scope("user"), "cannot read the ledger")

    def owner_roles(self) -> dict[str, str]:
        return self._with_ledger(lambda ledger: ledger.owner_roles(), "cannot read the ledger")

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        return self._with_ledger(lambda ledger: ledger.gpu_hours(since, until), "cannot read the ledger")

    def ping(self) -> None:
        self._with_ledger(lambda ledger: ledger.db.one("SELECT 1"), "unreachable")

    def start_checkpoints(self, interval_s: float = 1.0) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _job_error(exc: Exception) -> BaseException:
    return StoreError(f"PostgreSQL: {exc}") if isinstance(exc, psycopg.Error) else exc


class _Failed(Exception):
    """Raised inside a batch's transaction to roll it back for the job that failed."""

    def __init__(self, job: JobFailed) -> None:
        super().__init__(str(job.error))
        self.job = job


class _NotCommitted(StoreError):
    """Raised inside a transaction to roll it back when the commit is refused."""

    def __init__(self) -> None:
        super().__init__("rolled back: the decision budget ran out")


class _Transaction:
    """BEGIN, the write lock, then COMMIT, or ROLLBACK on any error (tolerating a dead connection)."""

    def __init__(self, ledger: Ledger) -> None:
        self._db = ledger.db

    def __enter__(self) -> None:
        self._db.run("BEGIN")
        self._db.run("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if exc_type is None:
            self._db.run("COMMIT")
            return
        try:
            self._db.run("ROLLBACK")
        except psycopg.Error as exc:
            log.warning("rollback failed: %s", exc)
