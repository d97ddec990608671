"""SQLite backend: WAL, one writer, `BEGIN IMMEDIATE` around every decision.

The SQL is kept portable (no SQLite-only functions) so the PostgreSQL backend can share it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.core.admission import Facts, Target, TargetKey
from gateway.core.decision import Decision
from gateway.core.quota import Usage
from gateway.errors import StoreError
from gateway.store.base import AuditFields, AuditQuery, Decider, Job, LedgerRow, kind_names
from gateway.store.chain import AUDIT_FIELDS, GENESIS, LATER_FIELDS, VerifyResult, row_hash, verify_rows

log = logging.getLogger("gateway.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    resource    TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    team        TEXT NOT NULL,
    role        TEXT NOT NULL,
    gpus        INTEGER NOT NULL,
    charged     INTEGER NOT NULL,
    shape       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    request_uid TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
CREATE INDEX IF NOT EXISTS reservations_owner ON reservations (owner, charged);
CREATE INDEX IF NOT EXISTS reservations_team ON reservations (team, charged);
CREATE TABLE IF NOT EXISTS audit (
    seq            INTEGER PRIMARY KEY,
    ts             REAL NOT NULL,
    request_uid    TEXT NOT NULL,
    user           TEXT NOT NULL,
    groups         TEXT NOT NULL,
    role           TEXT NOT NULL,
    action         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    object_uid     TEXT NOT NULL,
    gpus           INTEGER NOT NULL,
    decision       TEXT NOT NULL,
    mode           TEXT NOT NULL,
    rule           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    dry_run        INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    owner          TEXT NOT NULL,
    team           TEXT NOT NULL,
    changes        TEXT NOT NULL DEFAULT '[]',
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, ts);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_object ON audit (namespace, name);
CREATE TABLE IF NOT EXISTS audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    count     INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    gpus  INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
);
"""

#: `usage` holds the charged GPUs per user and per team, kept in step with `reservations`
#: in the same transactions, so a cap check reads two rows however large the ledger grows.
_REBUILD_USAGE = """
DELETE FROM usage;
INSERT INTO usage (scope, name, gpus)
    SELECT 'user', owner, SUM(gpus) FROM reservations WHERE charged = 1 GROUP BY owner;
INSERT INTO usage (scope, name, gpus)
    SELECT 'team', team, SUM(gpus) FROM reservations WHERE charged = 1 AND team != '' GROUP BY team;
"""

_AUDIT_COLUMNS = (*AUDIT_FIELDS, "prev_hash", "hash")
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _AUDIT_COLUMNS)})"
)


class SQLiteStore:
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
                self._db.executescript(SCHEMA)
                self._add_later_columns()
                self._db.executescript("BEGIN IMMEDIATE;" + _REBUILD_USAGE + "COMMIT;")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state file {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row

    def _add_later_columns(self) -> None:
        """Give a state file written by an earlier version the audit columns added since.

        Their default is the empty value, which the chain leaves out of the hash, so the
        records already written still verify.
        """
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit)")}
        for column, empty in LATER_FIELDS.items():
            if column not in columns:
                self._db.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT NOT NULL DEFAULT '{empty}'")

    # ------------------------------------------------------------- reads

    def _target(self, key: TargetKey) -> Target | None:
        row = self._db.execute(
            "SELECT owner, team, role, gpus, charged, shape FROM reservations "
            "WHERE resource = ? AND namespace = ? AND name = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        return Target(row["owner"], row["team"], row["role"], row["gpus"], bool(row["charged"]), row["shape"])

    def _usage(self, target: Target | None, owner: str, team: str) -> Usage:
        """Charged GPUs of the owner and of the team, less the target's own reservation."""
        rows = dict(self._db.execute(
            "SELECT scope, gpus FROM usage WHERE (scope = 'user' AND name = ?) OR (scope = 'team' AND name = ?)",
            (owner, team),
        ).fetchall())
        user, team_used = int(rows.get("user", 0)), int(rows.get("team", 0)) if team else 0
        if target is not None and target.charged:
            user -= target.gpus if target.owner == owner else 0
            team_used -= target.gpus if team and target.team == team else 0
        return Usage(user=user, team=team_used)

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True) -> Facts:
        """The target's record, the records of referenced objects, and (unless `usage` is
        False, for requests that cannot add GPUs) the owner's and team's usage."""
        with self._lock:
            target = self._target(key)
            if target is not None:
                owner, team = target.owner, target.team
            found = {}
            for ref in references:
                record = self._target(ref)
                if record is not None:
                    found[ref] = record
            used = self._usage(target, owner, team) if usage else Usage()
            return Facts(target=target, usage=used, references=found)

    # ------------------------------------------------------------- the write path

    def decide_in_transaction(
        self,
        key: TargetKey,
        owner: str,
        team: str,
        decider: Decider,
        audit_fields: AuditFields,
        *,
        dry_run: bool,
        now: float,
        request_uid: str,
    ) -> Decision:
        job = Job(key, owner, team, decider, audit_fields, dry_run=dry_run, now=now, request_uid=request_uid)
        [outcome] = self.decide_batch([job])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def decide_batch(self, jobs: Sequence[Job]) -> list[Decision | BaseException]:
        """Decide several requests in one transaction (one disk sync), in order.

        Each job runs inside its own savepoint and sees the writes of the jobs before it,
        so caps hold exactly as if they ran one by one; a job that fails is rolled back alone.
        If the commit fails, every job fails with a StoreError.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                return [StoreError(f"cannot start a transaction on {self.path}: {exc}") for _ in jobs]
            outcomes: list[Decision | BaseException] = []
            try:
                if len(jobs) == 1:
                    try:
                        outcomes.append(self._run_job(jobs[0], alone=True))
                    except Exception as exc:
                        if isinstance(exc, sqlite3.Error):
                            raise
                        self._rollback()
                        return [exc]
                else:
                    for job in jobs:
                        outcomes.append(self._run_job(job, alone=False))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                return [StoreError(f"state file {self.path}: {exc}") for _ in jobs]
            except BaseException:
                self._rollback()
                raise
            return outcomes

    def _run_job(self, job: Job, *, alone: bool) -> Decision | BaseException:
        """Run one job; in a batch, inside a savepoint so that its failure is its own."""
        if alone:
            return self._decide(job)
        self._db.execute("SAVEPOINT job")
        try:
            decision = self._decide(job)
        except Exception as exc:
            self._db.execute("ROLLBACK TO job")
            self._db.execute("RELEASE job")
            return StoreError(f"state file {self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc
        self._db.execute("RELEASE job")
        return decision

    def _decide(self, job: Job) -> Decision:
        decision = job.decider(self.facts(job.key, job.owner, job.team, job.reference_keys, usage=job.needs_usage))
        if decision.audited:
            self._append_audit(job.audit_fields(decision), now=job.now, dry_run=job.dry_run)
        if decision.allowed and not job.dry_run:
            self._apply(job.key, decision, now=job.now, request_uid=job.request_uid)
        return decision

    def _rollback(self) -> None:
        """Roll back, tolerating a transaction SQLite already rolled back itself (I/O errors)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _apply(self, key: TargetKey, decision: Decision, *, now: float, request_uid: str) -> None:
        """Write the reservation change, keeping the usage counters in step."""
        if not decision.release and decision.reserve is None:
            return
        old = self._target(key)
        if old is not None and old.charged:
            self._count(old.owner, old.team, -old.gpus)
        if decision.release:
            self._db.execute("DELETE FROM reservations WHERE resource = ? AND namespace = ? AND name = ?", key)
            return
        r = decision.reserve
        assert r is not None
        if r.charged:
            self._count(r.owner, r.team, r.gpus)
        self._db.execute(
            "INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, "
            "charged, shape, created_at, request_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (resource, namespace, name) DO UPDATE SET owner = excluded.owner, "
            "team = excluded.team, role = excluded.role, gpus = excluded.gpus, charged = excluded.charged, "
            "shape = excluded.shape, created_at = excluded.created_at, request_uid = excluded.request_uid",
            (*key, r.owner, r.team, r.role, r.gpus, int(r.charged), r.shape, now, request_uid),
        )

    def _count(self, owner: str, team: str, delta: int) -> None:
        for scope, name in (("user", owner), ("team", team)):
            if name and delta:
                self._db.execute(
                    "INSERT INTO usage (scope, name, gpus) VALUES (?, ?, ?) "
                    "ON CONFLICT (scope, name) DO UPDATE SET gpus = usage.gpus + excluded.gpus",
                    (scope, name, delta),
                )

    def _append_audit(self, fields: dict[str, Any], *, now: float, dry_run: bool) -> None:
        head = self._db.execute("SELECT count, last_hash FROM audit_head WHERE id = 1").fetchone()
        count, prev = (head["count"], head["last_hash"]) if head else (0, GENESIS)
        row = {**LATER_FIELDS, **fields}
        # ts is hashed as stored: the REAL column reads an int clock back as a float.
        row.update(seq=count + 1, ts=float(now), dry_run=int(dry_run))
        row["hash"] = row_hash(prev, row)
        row["prev_hash"] = prev
        self._db.execute(_INSERT_AUDIT, tuple(row[c] for c in _AUDIT_COLUMNS))
        self._db.execute(
            "INSERT INTO audit_head (id, count, last_hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET count = excluded.count, last_hash = excluded.last_hash",
            (row["seq"], row["hash"]),
        )

    # ------------------------------------------------------------- audit

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]:
        query = query or AuditQuery()
        where, args = _audit_filters(query)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for row in rows:
            out = dict(row)
            out["groups"] = json.loads(out["groups"])
            out["dry_run"] = bool(out["dry_run"])
            # A read-only state file of an earlier version has no `changes` column.
            out["changes"] = json.loads(out.get("changes") or "[]")
            yield out

    def verify(self) -> VerifyResult:
        with self._lock:
            try:
                head = self._db.execute("SELECT count, last_hash FROM audit_head WHERE id = 1").fetchone()
                rows = self._db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
            except sqlite3.Error as exc:
                return VerifyResult(False, 0, 1, f"cannot read the audit log: {exc}")
        return verify_rows(
            (dict(r) for r in rows),
            head["count"] if head else 0,
            head["last_hash"] if head else None,
        )

    # ------------------------------------------------------------- ledger views

    def reservations(self) -> list[LedgerRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM reservations ORDER BY created_at").fetchall()
        return [
            LedgerRow(r["resource"], r["namespace"], r["name"], r["owner"], r["team"], r["role"],
                      r["gpus"], bool(r["charged"]), r["created_at"], r["request_uid"],
                      json.loads(r["shape"] or "{}"))
            for r in rows
        ]

    def gpus_by_team(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, gpus FROM usage WHERE scope = 'team'").fetchall()
        return {r[0]: int(r[1]) for r in rows}

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


def _audit_filters(query: AuditQuery) -> tuple[list[str], list[Any]]:
    """SQL conditions (joined with AND) and their arguments for `query`."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("user", query.user), ("action", query.action), ("decision", query.decision),
                          ("namespace", query.namespace), ("name", query.name)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.kind is not None:
        # The kind (`PyTorchJob`) or, for /scale records, the resource (`pytorchjobs.kubeflow.org`).
        names = kind_names(query.kind)
        exact = f"LOWER(kind) IN ({', '.join('?' for _ in names)})"
        scaled = " OR ".join("LOWER(kind) LIKE ? ESCAPE '!'" for _ in names)
        where.append(f"({exact} OR {scaled})")
        args += [*names, *(_like_escape(n) + ".%" for n in names)]
    if query.since is not None:
        where.append("ts >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("ts < ?")
        args.append(query.until)
    return where, args


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
