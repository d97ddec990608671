"""Every subject's tables, in the order a new database creates them (see `gateway.store.migrations`)."""

from __future__ import annotations

from gateway.store.approvals import APPROVALS_SCHEMA
from gateway.store.chain import AUDIT_SCHEMA
from gateway.store.migrations import Dialect, Runner, Subject, upgrade
from gateway.store.queue import QUEUE_SCHEMA
from gateway.store.settings import SETTINGS_SCHEMA
from gateway.store.sql import LEDGER_SCHEMA, Ledger
from gateway.store.telemetry import TELEMETRY_SCHEMA

SUBJECTS: tuple[Subject, ...] = (LEDGER_SCHEMA, AUDIT_SCHEMA, APPROVALS_SCHEMA, QUEUE_SCHEMA, TELEMETRY_SCHEMA,
                                 SETTINGS_SCHEMA)


def prepare(db: Runner, dialect: Dialect) -> dict[str, tuple[int, int]]:
    """Upgrade every subject's tables, then recount the usage counters from the ledger (inside
    the transaction the backend opened); returns the subjects that moved, as `upgrade` does."""
    moved = upgrade(db, SUBJECTS, dialect)
    Ledger(db).rebuild_usage()
    return moved
