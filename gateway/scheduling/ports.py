"""What scheduling needs from a store: the queue's role, the values of a queue pass, and the
roles the controller's reconcilers use together. Pure: `gateway.store` implements the protocols.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict

from gateway.admission.policy import Policy
from gateway.admission.ports import Actor, ReservationStore, SettingStore
from gateway.admission.scheduling_settings import Scheduling
from gateway.audit.ports import AuditStore
from gateway.scheduling.queue import ReleasePlan
from gateway.scheduling.reconcile import FORGET_GRACE_S, PodView, Repair


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


def limits_from(policy: Policy, capacity: int | None = None) -> Limits:
    """The pass's `Limits` from the policy in force (gateway.admission.policy.Policy) and the cluster's capacity."""
    return Limits(
        role_user_caps={role: lim.max_concurrent_gpus for role, lim in policy.limits.items()},
        team_caps={t: c for t, c in policy.team_caps.items() if c is not None},
        default_team_cap=policy.default_team_cap,
        scheduling=policy.scheduling, capacity=capacity,
    )


def split_key(key: str) -> tuple[str, str, str]:
    """A workload's ledger key (`resource/namespace/name`) as its three parts."""
    resource, namespace, name = key.split("/", 2)
    return resource, namespace, name


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

    def record_roots(self, roots: Sequence[Repair], listed: Collection[str], *, now: float,
                     actor: Actor) -> list[Repair]:
        """Record the GPU roots the ledger does not hold, without an owner, and the kinds listed
        (gateway.scheduling.roots); returns the roots recorded."""
        ...

    def charged_workloads(self) -> dict[str, str]: ...


class ControllerStore(QueueStore, ReservationStore, SettingStore, AuditStore, Protocol):
    """The roles the controller's reconcilers use: the queue, the reservations whose objects may
    be gone, the webhook baselines kept as settings, and the audit records of drift."""
