"""What admission needs from a store: the roles for reservations, approvals and run-time settings,
and the values they take and return. Pure: `gateway.store` implements these protocols; the
admission write path (`LedgerStore.decide_batch`, which also writes the audit record) is declared
there, above the audit log it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.admission.identity import Grant

ApprovalKey = tuple[str, str, str, str]
"""(requester, action, namespace, name): the approvals that may lift a denial of a request."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes an approval or a grant through the admin API, as their audit records name them."""

    user: str
    groups: tuple[str, ...] = ()
    role: str = ""


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


class ReservationStore(Protocol):
    """Reservations and their usage counters, as read (the ledger's write path is
    `gateway.store.base.LedgerStore`)."""

    def reservations(self) -> list[LedgerRow]: ...

    def gpus_by_team(self) -> dict[str, int]: ...

    def gpus_by_user(self) -> dict[str, int]: ...

    def owner_roles(self) -> dict[str, str]:
        """Each owner of charged GPUs -> the role recorded with their newest reservation."""
        ...

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """GPU-hours held in [since, until) per `users`, `teams` and `roles`."""
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
