"""SQLite backend: WAL, one writer, `BEGIN IMMEDIATE` around every decision.

The statements live in `gateway.store.sql` and beside each subject's store, shared with the
PostgreSQL backend; the tables are brought to this release's schema on open (`gateway.store.schema`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.admission.admission import Facts, TargetKey
from gateway.admission.decision import Decision
from gateway.admission.ports import LedgerRow
from gateway.audit.ports import AuditQuery, VerifyResult
from gateway.errors import StoreError
from gateway.store.approvals import ApprovalsSQL
from gateway.store.batch import JobFailed, Outcome, decide_each, decide_jobs
from gateway.store.events import EventsSQL
from gateway.store.migrations import SQLITE, Row
from gateway.store.queue import QueueSQL
from gateway.store.schema import prepare
from gateway.store.settings import SettingsSQL
from gateway.store.sql import Ledger
from gateway.store.telemetry import TelemetrySQL
from gateway.store.types import Job

log = logging.getLogger("gateway.store")

_T = TypeVar("_T")


class _Runner:
    """`sql.Runner` over one sqlite3 connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._db.execute(sql, args).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self._db.execute(sql, args).fetchall())

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._db.execute(sql, args)


class SQLiteStore(ApprovalsSQL, SettingsSQL, TelemetrySQL, QueueSQL, EventsSQL):
    """The embedded store. Safe to share between threads; writes are serialised."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", readonly: bool = False) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._checkpoints_stop: threading.Event | None = None
        self._checkpoints: threading.Thread | None = None
        try:
            if readonly:
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                self._db.execute("PRAGMA temp_store=MEMORY")
                self._db.row_factory = sqlite3.Row
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    moved = prepare(_Runner(self._db), SQLITE)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    self._db.close()
                    raise
                for subject, (old, new) in moved.items():
                    if old:
                        log.info("state file %s: %s tables upgraded from schema version %d to %d",
                                 self.path, subject, old, new)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state file {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._ledger = Ledger(_Runner(self._db))

    # ------------------------------------------------------------- reads

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True) -> Facts:
        """The target's record, the records of referenced objects, and (unless `usage` is
        False, for requests that cannot add GPUs) the owner's and team's usage."""
        with self._lock:
            return self._ledger.facts(key, owner, team, references, usage=usage)

    def preview(self, job: Job) -> tuple[Decision, Facts]:
        def snapshot(ledger: Ledger) -> tuple[Decision, Facts]:
            self._db.execute("BEGIN")  # deferred: one read snapshot, no write lock
            try:
                return ledger.preview(job)
            finally:
                self._rollback()
        return self._read(snapshot)

    def _read(self, work: Callable[[Ledger], _T]) -> _T:
        with self._lock:
            try:
                return work(self._ledger)
            except sqlite3.Error as exc:
                raise StoreError(f"state file {self.path}: {exc}") from exc

    def _write(self, work: Callable[[Ledger], _T]) -> _T:
        """`work` in one write transaction (approvals and grants; admissions use `decide_batch`)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
            try:
                result = work(self._ledger)
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"state file {self.path}: {exc}") from exc
                raise
            return result

    # ------------------------------------------------------------- the write path

    def decide_batch(self, jobs: Sequence[Job], *,
                     ready_to_commit: Callable[[], bool] | None = None) -> list[Decision | BaseException]:
        """Decide several requests in one transaction (one disk sync), in order.

        Each job sees the writes of the jobs before it, so caps hold exactly as if they ran
        one by one; a job that fails fails alone (`gateway.store.batch`). If the commit
        fails, every job fails with a StoreError.
        """
        with self._lock:
            return decide_each(jobs, lambda live, isolate: self._try_batch(live, ready_to_commit, isolate))

    def _try_batch(self, jobs: Sequence[Job], ready_to_commit: Callable[[], bool] | None,
                   isolate: bool) -> list[Outcome] | JobFailed:
        """One transaction over `jobs` (`gateway.store.batch.decide_jobs`): their outcomes, or
        the first job that failed, the transaction rolled back."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [StoreError(f"cannot start a transaction on {self.path}: {exc}") for _ in jobs]
        self._ledger.chain_begin()
        try:
            decisions = decide_jobs(self._ledger, jobs, isolate=isolate, sync=_answered, error=self._job_error)
            if isinstance(decisions, JobFailed):
                self._rollback()
                return decisions
            self._ledger.chain_flush()
            if ready_to_commit is not None and not ready_to_commit():
                self._rollback()
                return [StoreError("rolled back: the decision budget ran out") for _ in jobs]
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            return [StoreError(f"state file {self.path}: {exc}") for _ in jobs]
        except BaseException:
            self._rollback()
            raise
        finally:
            self._ledger.chain_discard()
        return decisions

    def _job_error(self, exc: Exception) -> BaseException:
        return StoreError(f"state file {self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc

    def _rollback(self) -> None:
        """Roll back, tolerating a transaction SQLite already rolled back itself (I/O errors)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    # ------------------------------------------------------------- audit

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]:
        with self._lock:
            rows = self._ledger.audit_rows(query or AuditQuery())
        yield from rows

    def verify(self) -> VerifyResult:
        with self._lock:
            try:
                return self._ledger.verify()
            except sqlite3.Error as exc:
                return VerifyResult(False, 0, 1, f"cannot read the audit log: {exc}")

    # ------------------------------------------------------------- ledger views

    def reservations(self) -> list[LedgerRow]:
        with self._lock:
            return self._ledger.reservations()

    def gpus_by_team(self) -> dict[str, int]:
        with self._lock:
            return self._ledger.gpus_by_scope("team")

    def gpus_by_user(self) -> dict[str, int]:
        with self._lock:
            return self._ledger.gpus_by_scope("user")

    def owner_roles(self) -> dict[str, str]:
        return self._read(lambda ledger: ledger.owner_roles())

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        with self._lock:
            return self._ledger.gpu_hours(since, until)

    def ping(self) -> None:
        with self._lock:
            try:
                self._db.execute("SELECT 1").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc

    def start_checkpoints(self, interval_s: float = 1.0) -> None:
        """Move WAL checkpoints off the request path.

        By default the connection that commits copies the WAL back into the database every
        1,000 pages, inside a request. Here a thread with its own connection does it every
        `interval_s` (PASSIVE: it never blocks a writer; sqlite3 releases the GIL meanwhile).
        """
        if self._checkpoints is not None:
            return
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        stop = threading.Event()

        def run() -> None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            try:
                while not stop.wait(interval_s):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed: %s", exc)
            finally:
                conn.close()

        self._checkpoints_stop = stop
        self._checkpoints = threading.Thread(target=run, name="gpu-gateway-checkpoints", daemon=True)
        self._checkpoints.start()

    def close(self) -> None:
        if self._checkpoints is not None and self._checkpoints_stop is not None:
            self._checkpoints_stop.set()
            self._checkpoints.join(timeout=10)
            self._checkpoints = None
        with self._lock:
            self._db.close()


def _answered() -> None:
    """SQLite answers each statement as it runs: nothing to wait for."""
