"""The store interface: one ledger of reservations and one audit chain, one transaction each.

A backend implements `Store`. `decide_in_transaction` is the only write path for
admissions: it reads the facts, lets the pure core decide, and writes the audit row and
the reservation change in the same transaction, so two writers can never together break
a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.admission import Facts, TargetKey
from gateway.core.decision import Decision
from gateway.store.chain import VerifyResult

Decider = Callable[[Facts], Decision]
AuditFields = Callable[[Decision], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Job:
    """One admission to decide in a store transaction."""

    key: TargetKey
    owner: str
    team: str
    decider: Decider
    audit_fields: AuditFields
    dry_run: bool
    now: float
    request_uid: str


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    action: str | None = None
    decision: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None


@dataclass(frozen=True)
class LedgerRow:
    resource: str
    namespace: str
    name: str
    owner: str
    team: str
    role: str
    gpus: int
    charged: bool
    created_at: float
    request_uid: str
    extra: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
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
    ) -> Decision: ...

    def decide_batch(self, jobs: Sequence[Job]) -> list[Decision | BaseException]: ...

    def facts(self, key: TargetKey, owner: str, team: str) -> Facts: ...

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]: ...

    def verify(self) -> VerifyResult: ...

    def reservations(self) -> list[LedgerRow]: ...

    def gpus_by_team(self) -> dict[str, int]: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...
