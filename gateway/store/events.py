"""Audit records of the gateway's own events (not admissions), each in its own transaction.

`EventsSQL` is mixed into both backends, which supply `_write`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gateway.store.sql import Ledger

_T = TypeVar("_T")


class EventsSQL:
    def _write(self, work: Callable[[Ledger], _T]) -> _T:
        raise NotImplementedError

    def record_event(self, fields: dict[str, Any], *, now: float) -> tuple[int, str]:
        """Append one audit record (all of `fields`' audit columns) to the chain; the head
        (count, last hash) right after it, read in the same transaction."""
        return self._write(lambda ledger: ledger.append_audit(fields, now=now, dry_run=False))
