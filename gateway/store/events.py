"""Audit records of the gateway's own events (not admissions), each in its own transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from gateway.store.sql import Ledger

_T = TypeVar("_T")


class _Transactional(Protocol):
    """A store that runs work in one write transaction (both backends, via ExceptionsStore)."""

    def _write(self, work: Callable[[Ledger], _T]) -> _T: ...


def record_event(store: Any, fields: dict[str, Any], *, now: float) -> None:
    """Append one audit record (all of `fields`' audit columns) to `store`'s chain."""
    transactional: _Transactional = store
    transactional._write(lambda ledger: ledger.append_audit(fields, now=now, dry_run=False))
