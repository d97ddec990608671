"""The store's value types: what callers hand to a store and what they get back, in one place.

The role interfaces that take and return them are in `gateway.store.base`; the backends in
`gateway.store.sqlite` and `gateway.store.postgres`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from gateway.admission.actors import kind_plural
from gateway.admission.admission import TargetKey
from gateway.admission.plan import Plan, StatedFacts
from gateway.admission.policy import Policy
from gateway.admission.scheduling_settings import BudgetQuery, Scheduling
from gateway.audit.records import RequestRecord
from gateway.scheduling.queue import ReleasePlan
from gateway.telemetry.alerts import Alert

ApprovalKey = tuple[str, str, str, str]
"""(requester, action, namespace, name): the approvals that may lift a denial of a request."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes an approval or a grant through the admin API, as their audit records name them."""

    user: str
    groups: tuple[str, ...] = ()
    role: str = ""


@dataclass(slots=True)
class Job:
    """One admission to decide in a store transaction, as data: the store reads the facts it
    names, decides the prepared `plan` under `policy` with the core's `decide`, and writes
    `audit` joined with the decision (gateway.audit.records) and the reservation change.

    Treat as immutable. Not `frozen`: one is built per request, and a frozen dataclass's
    `__init__` costs several times a plain one."""

    key: TargetKey
    owner: str
    team: str
    plan: Plan
    policy: Policy
    audit: RequestRecord
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
    stated: StatedFacts | None = None
    """A what-if's statements, laid over the facts read (never set on an admission)."""


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
    """Its shape (admission/shape.py), parsed."""


class QueueRow(TypedDict):
    """A waiting workload as `QueueStore.queue_rows` reads it, in queue order."""

    resource: str
    namespace: str
    name: str
    owner: str
    team: str
    role: str
    gpus: int
    pods: int
    priority: int
    priority_class: str
    arrival: float
    position: int
    reason: str
    request_uid: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps a pass applies that do not live in the ledger: from the policy and the cluster."""

    role_user_caps: Mapping[str, int | None]
    team_caps: Mapping[str, int]
    default_team_cap: int | None
    scheduling: Scheduling
    capacity: int | None = None
    """GPU allocatable on the cluster's nodes; None when unknown."""


@dataclass(frozen=True, slots=True)
class PassResult:
    plan: ReleasePlan
    dropped: tuple[tuple[str, str], ...] = ()
    """(workload key, reason) of gangs whose reservations were dropped."""


@dataclass(frozen=True, slots=True)
class NewApproval:
    action: str
    kind: str
    namespace: str
    name: str
    gpus: int
    reason: str
    expires_in_s: float
    requester_teams: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewGrant:
    user: str
    role: str
    reason: str
    expires_in_s: float


@dataclass(frozen=True, slots=True)
class Setting:
    kind: str
    name: str
    value: Any
    revision: int
    updated_by: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class SettingChange:
    kind: str
    name: str
    value: Any
    """The new value (JSON-able); None removes the setting, bringing back the bundle's."""
    reason: str
    approval: ApprovalKey | None = None
    """When set, an approved, unused approval of this key is consumed with the change."""


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alerts: list[Alert] = field(default_factory=list)
