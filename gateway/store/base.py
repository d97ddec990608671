"""The store's interfaces: the admission write path, and `Store`, every role together.

Each subject declares the roles it uses in its `ports` module (reservations, approvals and
settings in gateway.admission.ports, the audit chain in gateway.audit.ports, the queue in
gateway.scheduling.ports, telemetry in gateway.telemetry.ports), so its adapters never import
the store. A caller types its store on the roles it uses (the audit API only `AuditStore`), so a
test double or a new backend implements what is used. Both backends (`gateway.store.sqlite`,
`gateway.store.postgres`) implement `Store`.

`decide_batch` is the only write path for admissions: for each job it reads the facts, lets
the pure core decide, and writes the audit row and the reservation change in the same
transaction, so two writers can never together break a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.admission.admission import Facts, TargetKey
from gateway.admission.decision import Decision
from gateway.admission.ports import ApprovalStore, ReservationStore, SettingStore
from gateway.audit.ports import AuditStore
from gateway.scheduling.ports import QueueStore
from gateway.store.types import Job
from gateway.telemetry.ports import TelemetryStore


class LedgerStore(ReservationStore, Protocol):
    """Reservations and their usage counters; admissions decided and written in one transaction."""

    def decide_batch(self, jobs: Sequence[Job], *,
                     ready_to_commit: Callable[[], bool] | None = None) -> list[Decision | BaseException]:
        """Decide `jobs` in one transaction; `ready_to_commit`, called right before COMMIT,
        may refuse it: the transaction is then rolled back and every job fails."""
        ...

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True) -> Facts: ...

    def preview(self, job: Job) -> tuple[Decision, Facts]:
        """The decision `decide_batch` would make on `job` now, from one consistent read of the
        store, writing nothing: no reservation, no audit record, no approval used (the what-if);
        and the facts it read."""
        ...


class Store(LedgerStore, AuditStore, ApprovalStore, SettingStore, QueueStore, TelemetryStore, Protocol):
    """Every role, as both backends implement them."""

    def ping(self) -> None: ...

    def start_checkpoints(self, interval_s: float = 1.0) -> None: ...

    def close(self) -> None: ...


def decide_one(store: LedgerStore, job: Job) -> Decision:
    """Decide one job in its own transaction; its failure is raised."""
    [outcome] = store.decide_batch([job])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
