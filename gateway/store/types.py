"""The value the store's admission write path takes: one admission to decide, as data.

Each subject declares the roles it needs from a store and the values they take and return in its
`ports` module (gateway.admission.ports, gateway.audit.ports, gateway.scheduling.ports,
gateway.telemetry.ports); `Job` sits here because it carries the audit record the decision writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission.admission import TargetKey
from gateway.admission.plan import Plan, StatedFacts
from gateway.admission.policy import Policy
from gateway.admission.ports import ApprovalKey
from gateway.admission.scheduling_settings import BudgetQuery
from gateway.audit.records import RequestRecord


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
    roots: bool = False
    """For a `/scale` where a controller lists the workloads that predate the gateway: read,
    if the ledger does not hold the target, whether its kind is listed (`Facts.roots_listed`)."""
    stated: StatedFacts | None = None
    """A what-if's statements, laid over the facts read (never set on an admission)."""
