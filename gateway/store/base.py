"""The store interface: one ledger of reservations and one audit chain, one transaction each.

A backend implements `Store`. `decide_batch` is the only write path for admissions: for
each job it reads the facts, lets the pure core decide, and writes the audit row and the
reservation change in the same transaction, so two writers can never together break a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.actors import kind_plural
from gateway.core.admission import Facts, TargetKey
from gateway.core.decision import Decision
from gateway.core.identity import Grant
from gateway.core.scheduling import BudgetQuery
from gateway.store.chain import VerifyResult

if TYPE_CHECKING:
    from gateway.core.telemetry import GpuSample, TelemetryPolicy
    from gateway.store.approvals import NewApproval, NewGrant
    from gateway.store.settings import Setting, SettingChange
    from gateway.store.telemetry import IngestResult

Decider = Callable[[Facts], Decision]
AuditFields = Callable[[Decision], dict[str, Any]]
ApprovalKey = tuple[str, str, str, str]
"""(requester, action, namespace, name): the approvals that may lift a denial of a request."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes an approval or a grant through the admin API, as their audit records name them."""

    user: str
    groups: tuple[str, ...] = ()
    role: str = ""


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
    reference_keys: tuple[TargetKey, ...] = ()
    """Ledger keys of the PVCs, ConfigMaps and Secrets the request's pods reference."""
    needs_usage: bool = True
    """Whether the decision may add GPUs, and so needs the owner's and team's usage."""
    approval_key: ApprovalKey | None = None
    """Set for governed actions: the approvals the store reads after a denial they may lift."""
    budget: BudgetQuery | None = None
    """Set for a GPU launch whose owner or team has a GPU-hour budget: read into `Facts.spent_budgets`."""
    uids: tuple[str, ...] = ()
    """UIDs of the objects a person's object names as owners: read into `Facts.by_uid`."""
    referrers: bool = False
    """For a person's create of a data object: read who references its name (`Facts.referrers`)."""
    parent: tuple[str, TargetKey | None] | None = None
    """For an actor's create: the UID (and, for records from before UIDs were kept, the key) of
    the parent its controller ownerReference names: read into `Facts.parent` and `Facts.root`."""


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    action: str | None = None
    decision: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    kind: str | None = None
    """The kind or its resource, in any case: `PyTorchJob`, `pytorchjobs` (see `kind_names`)."""
    namespace: str | None = None
    name: str | None = None
    after: int | None = None
    """Only records after this sequence number (a cursor, for following the log)."""


def kind_names(kind: str) -> tuple[str, ...]:
    """The lower-case names one kind goes by, from either of them: `PyTorchJob` or `pytorchjobs`.

    Records name a workload by its kind (`PyTorchJob`), and a `/scale` request by its resource
    (`pytorchjobs.kubeflow.org`), so a query for either must match both. The resource is the
    kind's plural, as Kubernetes forms it; a group suffix in `kind` is ignored.
    """
    base = kind.split(".", 1)[0].lower()
    names = {base, kind_plural(base)}
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if base.endswith(suffix) and len(base) > len(suffix):
            names.add(base[: -len(suffix)] + replacement)
    return tuple(sorted(n for n in names if n))


def named_by(kind: str, resources: Iterable[str]) -> list[str]:
    """The ledger keys among `resources` (`pytorchjobs.kubeflow.org`, `pods`) that `kind` names as
    a person types it (see `kind_names`; `jobs.batch` also works), the exact key first, then by key."""
    wanted, names = kind.lower(), kind_names(kind)
    found = sorted({r for r in resources if r == wanted or r.split(".", 1)[0] in names})
    return sorted(found, key=lambda r: r != wanted)


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
    """When it was admitted, or released from the queue: since when it holds its GPUs."""
    request_uid: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Its shape (core/shape.py), parsed."""


class Store(Protocol):
    def decide_batch(self, jobs: Sequence[Job], *,
                     ready_to_commit: Callable[[], bool] | None = None) -> list[Decision | BaseException]:
        """Decide `jobs` in one transaction; `ready_to_commit`, called right before COMMIT,
        may refuse it: the transaction is then rolled back and every job fails."""
        ...

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True) -> Facts: ...

    def preview(self, job: Job) -> Decision:
        """The decision `decide_batch` would make on `job` now, from one consistent read of the
        store, writing nothing: no reservation, no audit record, no approval used (the what-if)."""
        ...

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]: ...

    def verify(self) -> VerifyResult: ...

    def reservations(self) -> list[LedgerRow]: ...

    def queue_rows(self) -> list[dict[str, Any]]:
        """Waiting workloads in queue order (gateway.store.queue.QueueStore)."""
        ...

    def gpus_by_team(self) -> dict[str, int]: ...

    def gpus_by_user(self) -> dict[str, int]: ...

    def owner_roles(self) -> dict[str, str]:
        """Each owner of charged GPUs -> the role recorded with their newest reservation."""
        ...

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """GPU-hours held in [since, until) per `users`, `teams` and `roles`."""
        ...

    # Approvals and break-glass grants (gateway.store.approvals.ExceptionsStore; docs/approvals.md).

    def create_approval(self, new: NewApproval, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def approval(self, approval_id: str, *, now: float) -> dict[str, Any] | None: ...

    def approvals(self, *, now: float) -> list[dict[str, Any]]: ...

    def review_approval(self, approval_id: str, verdict: str, actor: Actor, comment: str, *,
                        now: float) -> dict[str, Any]: ...

    def create_grant(self, new: NewGrant, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def grants(self, *, now: float) -> list[dict[str, Any]]: ...

    def revoke_grant(self, grant_id: str, actor: Actor, *, now: float) -> dict[str, Any]: ...

    def live_grants(self, *, now: float) -> tuple[Grant, ...]: ...

    # Run-time settings (gateway.store.settings.SettingsStore; docs/admin.md).

    def settings_revision(self) -> int: ...

    def settings(self) -> list[Setting]: ...

    def put_setting(self, change: SettingChange, actor: Actor, *, now: float) -> dict[str, Any]: ...

    # GPU telemetry from the node agents (gateway.store.telemetry.TelemetryStore; docs/agent.md).

    def ingest_telemetry(self, samples: Sequence[GpuSample], *, reporter: Actor, policy: TelemetryPolicy,
                         exempt_namespaces: frozenset[str], policy_version: str, now: float) -> IngestResult: ...

    def ingest_telemetry_many(self, reports: Sequence[tuple[Sequence[GpuSample], Actor]], *,
                              policy: TelemetryPolicy, exempt_namespaces: frozenset[str], policy_version: str,
                              now: float) -> list[IngestResult]: ...

    def measured_usage(self, since: float, until: float) -> dict[str, dict[str, dict[str, Any]]]: ...

    def record_eviction(self, fields: dict[str, Any], *, now: float) -> None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def decide_one(store: Store, job: Job) -> Decision:
    """Decide one job in its own transaction; its failure is raised."""
    [outcome] = store.decide_batch([job])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
