"""A database made by the previous release opens with this one, on SQLite and PostgreSQL: every
subject's tables reach the newest schema version, the audit chain still verifies, the ledger and
the usage counters are what they were, approvals keep their state, and admissions go on.

`tests/fixtures/previous_release/` holds that release's schema text, verbatim, and the rows its
store wrote through its own admission, approval and grant paths (8 audit records, 2 reservations),
so the state file is built exactly as that release left it, with no versions table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import INTERN, POLICIES, make_job, review
from postgres_server import pg_url, postgres  # noqa: F401 - fixtures

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.migrations import POSTGRES, SQLITE, Dialect, statements
from gateway.store.postgres import PostgresStore
from gateway.store.schema import SUBJECTS
from gateway.store.sqlite import SQLiteStore

PREVIOUS = Path(__file__).parent.parent / "fixtures" / "previous_release"
ROWS: dict[str, list[dict[str, Any]]] = json.loads((PREVIOUS / "rows.json").read_text())
NEWEST = {s.name: s.version for s in SUBJECTS}

Execute = Callable[[str, tuple[Any, ...]], None]


def previous_release(execute: Execute, dialect: Dialect) -> None:
    """Create the previous release's tables and put its rows in them."""
    for statement in statements((PREVIOUS / "schema.sql").read_text()):
        execute(dialect.render(statement), ())
    for table, rows in ROWS.items():
        for row in rows:
            columns = ", ".join(f'"{c}"' for c in row)
            execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))


@pytest.fixture(params=["sqlite", "postgres"])
def old_store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        with closing(sqlite3.connect(path)) as db, db:
            previous_release(lambda sql, args: db.execute(sql, args).close(), SQLITE)
        yield lambda: SQLiteStore(path)
    else:
        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url) as conn:
            previous_release(lambda sql, args: conn.execute(sql.replace("?", "%s"), args).close(), POSTGRES)
        yield lambda: PostgresStore(url)


def versions(store: Any) -> dict[str, int]:
    rows = store._read(lambda ledger: ledger.db.all("SELECT subject, version FROM schema_versions"))
    return {r["subject"]: int(r["version"]) for r in rows}


def test_the_previous_releases_database_upgrades_and_its_audit_chain_verifies(old_store_opener) -> None:
    store = old_store_opener()
    try:
        assert versions(store) == NEWEST
        result = store.verify()
        assert result.ok and result.rows == len(ROWS["audit"]) == 8, result
        assert [r["hash"] for r in store.audit_rows()] == [r["hash"] for r in ROWS["audit"]]
        assert [r["changes"] for r in store.audit_rows()] == [json.loads(r["changes"]) for r in ROWS["audit"]]
        ledger = {(r.resource, r.namespace, r.name): (r.owner, r.gpus, r.charged) for r in store.reservations()}
        assert ledger == {(r["resource"], r["namespace"], r["name"]): (r["owner"], r["gpus"], bool(r["charged"]))
                          for r in ROWS["reservations"]}
        assert store.gpus_by_user() == {"alice": 8, "bob": 16}
        [approval] = store.approvals(now=ROWS["approvals"][0]["created_at"] + 60)
        assert (approval["state"], approval["reviewer"], approval["target_owner"]) == ("approved", "carol", None)
        [grant] = store.grants(now=ROWS["grants"][0]["created_at"] + 60)
        assert (grant["user"], grant["state"]) == ("dave", "active")

        later = ROWS["audit"][-1]["ts"] + 60  # the approval and the grant are still live
        service = AdmissionService(PolicyHolder(POLICIES), store, metrics=Metrics(), clock=lambda: later)
        obj = make_job(gpus=8).named("research", "after-upgrade").obj()
        assert service.validate(review(obj, user="alice", groups=INTERN).body())["response"]["allowed"]
        assert store.gpus_by_user() == {"alice": 16, "bob": 16}
        result = store.verify()
        assert result.ok and result.rows == 9, result
    finally:
        store.close()
    again = old_store_opener()  # a second open finds every subject current and changes nothing
    try:
        assert versions(again) == NEWEST and again.verify().rows == 9
    finally:
        again.close()


def test_a_rollback_opens_a_newer_releases_database_with_a_warning_and_leaves_it_newer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE schema_versions SET version = version + 1 WHERE subject = 'audit'")
    with caplog.at_level("WARNING", logger="gateway.store"):
        store = SQLiteStore(path)
    try:
        assert "audit tables are at schema version 2, newer than this gpu-gateway knows (1)" in caplog.text
        assert versions(store) == {**NEWEST, "audit": NEWEST["audit"] + 1}
        assert store.verify().ok
    finally:
        store.close()
