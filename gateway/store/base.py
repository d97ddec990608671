"""The store's interfaces, one small protocol per role; `Store` is all of them.

A caller types its store on the roles it uses (the what-if needs only `LedgerStore.preview`,
the audit API only `AuditStore`), so a test double or a new backend implements what is used.
Both backends (`gateway.store.sqlite`, `gateway.store.postgres`) implement `Store`. The values
these take and return are in `gateway.store.types`.

`decide_batch` is the only write path for admissions: for each job it reads the facts, lets
the pure core decide, and writes the audit row and the reservation change in the same
transaction, so two writers can never together break a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from gateway.admission.admission import Facts, TargetKey
from gateway.admission.decision import Decision
from gateway.admission.identity import Grant
from gateway.scheduling.reconcile import FORGET_GRACE_S, PodView, Repair
from gateway.store.chain import VerifyResult
from gateway.store.types import (
    Actor,
    AuditQuery,
    IngestResult,
    Job,
    LedgerRow,
    Limits,
    NewApproval,
    NewGrant,
    PassResult,
    QueueRow,
    Setting,
    SettingChange,
)
from gateway.telemetry.samples import GpuSample
from gateway.telemetry.settings import TelemetrySettings


class LedgerStore(Protocol):
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

    def reservations(self) -> list[LedgerRow]: ...

    def gpus_by_team(self) -> dict[str, int]: ...

    def gpus_by_user(self) -> dict[str, int]: ...

    def owner_roles(self) -> dict[str, str]:
        """Each owner of charged GPUs -> the role recorded with their newest reservation."""
        ...

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """GPU-hours held in [since, until) per `users`, `teams` and `roles`."""
        ...


class AuditStore(Protocol):
    """The audit chain: its records, and the walk that proves them unaltered."""

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]: ...

    def verify(self) -> VerifyResult: ...

    def record_event(self, fields: dict[str, Any], *, now: float) -> tuple[int, str]:
        """Append one record of the gateway's own doing (all of `fields`' audit columns); the
        chain's head (count, last hash) right after it."""
        ...


class ApprovalStore(Protocol):
    """Approvals and break-glass grants (gateway.store.approvals; docs/approvals.md)."""

    def create_approval(self, new: NewApproval, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def approval(self, approval_id: str, *, now: float) -> dict[str, Any] | None: ...

    def approvals(self, *, now: float) -> list[dict[str, Any]]: ...

    def review_approval(self, approval_id: str, verdict: str, actor: Actor, comment: str, *,
                        now: float) -> dict[str, Any]: ...

    def create_grant(self, new: NewGrant, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def grants(self, *, now: float) -> list[dict[str, Any]]: ...

    def revoke_grant(self, grant_id: str, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def live_grants(self, *, now: float) -> tuple[Grant, ...]: ...


class SettingStore(Protocol):
    """Run-time settings (gateway.store.settings; docs/admin.md)."""

    def settings_revision(self) -> int: ...

    def settings(self) -> list[Setting]: ...

    def put_setting(self, change: SettingChange, actor: Actor, *, now: float) -> dict[str, Any]: ...


class QueueStore(Protocol):
    """The waiting workloads and the passes that release them (gateway.store.queue)."""

    def queue_rows(self) -> list[QueueRow]:
        """Waiting workloads in queue order."""
        ...

    def run_queue(self, limits: Limits, *, now: float, actor: Actor,
                  pods_seen: Mapping[str, int] | None = None) -> PassResult: ...

    def reconcile(self, pods: Sequence[PodView], *, now: float, actor: Actor,
                  absent: frozenset[str] = frozenset(), grace_s: float = FORGET_GRACE_S) -> list[Repair]:
        """Make the ledger agree with the cluster's `pods` (gateway.scheduling.reconcile)."""
        ...

    def charged_workloads(self) -> dict[str, str]: ...


class TelemetryStore(Protocol):
    """GPU telemetry from the node agents (gateway.store.telemetry; docs/agent.md)."""

    def ingest_telemetry(self, samples: Sequence[GpuSample], *, reporter: Actor, settings: TelemetrySettings,
                         exempt_namespaces: frozenset[str], policy_version: str, now: float) -> IngestResult: ...

    def ingest_telemetry_many(self, reports: Sequence[tuple[Sequence[GpuSample], Actor]], *,
                              settings: TelemetrySettings, exempt_namespaces: frozenset[str], policy_version: str,
                              now: float) -> list[IngestResult]: ...

    def measured_usage(self, since: float, until: float) -> dict[str, dict[str, dict[str, Any]]]: ...

    def telemetry_samples(self, node: str | None = None) -> list[dict[str, Any]]: ...

    def record_eviction(self, fields: dict[str, Any], *, now: float) -> None: ...


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
