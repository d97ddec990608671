"""Versioned schema: each subject's tables evolve by forward migrations, recorded per subject.

A subject (the ledger, the audit chain, approvals, ...) declares its tables beside the code
that reads them, as a list of `Migration`s; version 1 is the schema of the first release that
kept versions. `upgrade` runs, inside the transaction the backend opened, every migration a
database has not had yet and records each subject's version in `schema_versions`. A database
written before versions were kept has no such table: every migration runs, and each step is
idempotent (`IF NOT EXISTS`, `AddColumn` only when the column is missing), so it upgrades
from whatever it held. Migrations only add (tables, nullable or defaulted columns, indexes), so
an older release still works on a newer database (a rollback, docs/operations.md): a subject
newer than this release knows is left as it is, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("gateway.store")

Row = Mapping[str, Any]


class Runner(Protocol):
    """One connection of a backend, inside the transaction the backend opened."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> None: ...


@dataclass(frozen=True, slots=True)
class AddColumn:
    """Add a column to an existing table unless it is there already (written as `declaration`)."""

    table: str
    column: str
    declaration: str


@dataclass(frozen=True, slots=True)
class ByDialect:
    """Statements written apart for each backend (triggers: SQLite's and PostgreSQL's differ)."""

    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


Step = str | AddColumn | ByDialect
"""A statement (`{float}` and `{seq}` name the backend's 64-bit float and sequence types), a
column to add, or statements per backend."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Subject:
    """The tables of one subject and how they came to be, oldest migration first."""

    name: str
    migrations: tuple[Migration, ...]

    @property
    def version(self) -> int:
        return self.migrations[-1].version if self.migrations else 0


def statements(text: str) -> tuple[str, ...]:
    """The `;`-separated statements of a schema text."""
    return tuple(s.strip() for s in text.split(";") if s.strip())


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' DDL: timestamps need a 64-bit float (`ts` is hashed
    as stored); `columns_sql` lists a table's columns as rows with a `name`."""

    name: str
    float_type: str
    seq_type: str
    columns_sql: str

    def render(self, statement: str) -> str:
        return statement.format(float=self.float_type, seq=self.seq_type)


SQLITE = Dialect("sqlite", "REAL", "INTEGER", "SELECT name FROM pragma_table_info(?)")
POSTGRES = Dialect("postgres", "DOUBLE PRECISION", "BIGINT",
                   "SELECT column_name AS name FROM information_schema.columns "
                   "WHERE table_schema = current_schema() AND table_name = ?")

_VERSIONS = "CREATE TABLE IF NOT EXISTS schema_versions (subject TEXT PRIMARY KEY, version INTEGER NOT NULL)"
_SET_VERSION = ("INSERT INTO schema_versions (subject, version) VALUES (?, ?) "
                "ON CONFLICT (subject) DO UPDATE SET version = excluded.version")


def versions(db: Runner) -> dict[str, int]:
    """Each subject's recorded schema version (none for a database from before versions)."""
    return {str(r["subject"]): int(r["version"]) for r in db.all("SELECT subject, version FROM schema_versions")}


def upgrade(db: Runner, subjects: Iterable[Subject], dialect: Dialect) -> dict[str, tuple[int, int]]:
    """Bring every subject to its newest version; returns subject -> (from, to) for those that moved."""
    db.run(_VERSIONS)
    have = versions(db)
    moved: dict[str, tuple[int, int]] = {}
    for subject in subjects:
        current = have.get(subject.name, 0)
        if current > subject.version:
            log.warning("the store's %s tables are at schema version %d, newer than this gpu-gateway knows (%d): "
                        "left as they are; go back to a release at least as new soon", subject.name, current,
                        subject.version)
            continue
        for migration in subject.migrations:
            if migration.version > current:
                for step in migration.steps:
                    _apply(db, step, dialect)
        if current < subject.version:
            db.run(_SET_VERSION, (subject.name, subject.version))
            moved[subject.name] = (current, subject.version)
    return moved


def _apply(db: Runner, step: Step, dialect: Dialect) -> None:
    if isinstance(step, str):
        db.run(dialect.render(step))
        return
    if isinstance(step, ByDialect):
        for statement in step.sqlite if dialect.name == "sqlite" else step.postgres:
            db.run(statement)
        return
    present = {str(r["name"]) for r in db.all(dialect.columns_sql, (step.table,))}
    if step.column not in present:
        db.run(dialect.render(f"ALTER TABLE {step.table} ADD COLUMN {step.column} {step.declaration}"))
