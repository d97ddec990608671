"""Truth from the cluster: what the controller changes, given the pods it sees and the ledger. Pure.

`read_pod` reduces a Pod object (as the API server lists it) to what the controller needs.
`plan_reconcile` compares the pods with the ledger's reservations and answers the repairs:

- a pod reservation whose pod is gone (a DELETE the webhook never saw, or a pod another
  admission step refused after the gateway admitted it) is forgotten, once it is older than
  the grace (`FORGET_GRACE_S`): a pod admitted a moment ago may not be in the list yet;
- a reservation of another workload kind that is older than the grace, has no pod, and whose
  object the API server says does not exist (`absent`: refused by a later admission step,
  a crash right after the commit, or a missed DELETE) is forgotten; `orphan_candidates`
  names the reservations the controller should look up;
- a charged reservation of a finished pod (`Succeeded`/`Failed`), or of a workload all of
  whose pods are finished, is uncharged: its GPUs are free, the owner's record stays (so
  the owner may still delete the finished object); a finished pod's record then holds 0 GPUs,
  so that its controller's replacement fits what the root workload is charged for;
- a GPU pod running or pending (not gated) that neither it nor its workload has a
  reservation for is accounted: recorded without an owner (`""`, whatever its annotations
  say), so it counts against the cluster's capacity and administrators see it.

`gates_to_remove` answers which gated pods the controller releases: those of workloads the
ledger holds charged (released by a queue pass, or admitted at once), owned by that
workload's owner and in its namespace (a pod cannot borrow another workload's key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.actors import controller_ref
from gateway.admission.pointer import is_object
from gateway.admission.policy import OWNER_ANNOTATION, TEAM_ANNOTATION
from gateway.admission.scheduling_settings import QUOTA_GATE, WORKLOAD_ANNOTATION
from gateway.admission.workloads import GpuMatcher, pod_gpus
from gateway.errors import WorkloadError

FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    uid: str
    phase: str
    gpus: int
    owner: str
    team: str
    workload: str
    """The workload key its template carried (`resource/namespace/name`), or ""."""
    gate_index: int | None
    """Index of the quota gate in spec.schedulingGates, None when not gated."""
    deleting: bool = False
    parent_uid: str = ""
    """The UID its controller ownerReference names ("" when none)."""

    @property
    def key(self) -> str:
        return f"pods/{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def gated(self) -> bool:
        return self.gate_index is not None


def read_pod(pod: Mapping[str, Any], gpu: GpuMatcher) -> PodView | None:
    """The controller's view of a listed Pod; None for an object that is not a readable pod."""
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if not is_object(meta) or not is_object(spec):
        return None
    ann, status = _obj(meta.get("annotations")), _obj(pod.get("status"))
    try:
        gpus = sum(pod_gpus(spec, gpu).values())
    except (WorkloadError, TypeError, ValueError):
        gpus = 0
    gates = spec.get("schedulingGates")
    index = None
    if isinstance(gates, list):
        index = next((i for i, g in enumerate(gates) if is_object(g) and g.get("name") == QUOTA_GATE), None)
    return PodView(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""), uid=str(meta.get("uid") or ""),
        phase=str(status.get("phase") or "Pending"), gpus=gpus,
        owner=str(ann.get(OWNER_ANNOTATION) or ""), team=str(ann.get(TEAM_ANNOTATION) or ""),
        workload=str(ann.get(WORKLOAD_ANNOTATION) or ""), gate_index=index,
        deleting=bool(meta.get("deletionTimestamp")),
        parent_uid=parent.uid if (parent := controller_ref(pod)) is not None else "",
    )


@dataclass(frozen=True, slots=True)
class Held:
    """A reservation in the ledger, as the controller compares it with the cluster."""

    key: str
    owner: str
    team: str
    gpus: int
    charged: bool
    created_at: float = 0.0
    """When the reservation was made, or released from the queue (0: long ago)."""
    hold_until: float | None = None
    """For a pod deleted at once whose containers may still run: until when its record stays."""


#: How old a pod reservation must be before its missing pod makes the controller forget it:
#: the time from the admission's commit to the pod's appearing in the controller's list.
FORGET_GRACE_S = 30.0


@dataclass(frozen=True, slots=True)
class Repair:
    key: str
    kind: str
    """`forget` (drop the record of a pod that is gone), `uncharge` (keep the owner's record,
    free its GPUs: finished), `account` (charge a GPU pod the ledger does not hold), or `root`
    (record a GPU workload that predates the gateway, without an owner: scheduling/roots.py)."""
    reason: str
    owner: str = ""
    team: str = ""
    gpus: int = 0
    charged: bool = True
    """For a new record (`account`, `root`): whether its GPUs count as in use."""
    shape: str = "{}"
    """For a new record: its shape (admission/shape.py), pod sets by path."""
    uid: str = ""
    """For a new record: the object's UID (a `root` is its own root)."""
    root_uid: str = ""
    """For a new `root` record that a listed workload controls (a legacy Deployment's
    ReplicaSet): the UID of the record holding the charge; "" for a root of its own."""
    parent_uid: str = ""
    """For a listed object: the UID its controller ownerReference names ("" when none)."""


def orphan_candidates(pods: Iterable[PodView], ledger: Iterable[Held], *, waiting: frozenset[str] = frozenset(),
                      now: float, grace_s: float = FORGET_GRACE_S) -> list[str]:
    """Keys of workload reservations (not pods, not queued) older than the grace that no pod
    names: the controller asks the API server whether their objects exist."""
    named = {p.workload for p in pods if p.workload}
    return [h.key for h in ledger
            if not h.key.startswith("pods/") and h.key not in waiting and h.key not in named
            and now - h.created_at >= grace_s]


def plan_reconcile(pods: Iterable[PodView], ledger: Iterable[Held], *, waiting: frozenset[str] = frozenset(),
                   now: float = float("inf"), grace_s: float = FORGET_GRACE_S,
                   absent: frozenset[str] = frozenset()) -> list[Repair]:
    """The repairs that make the ledger agree with the cluster (see the module docstring).

    `waiting` holds the keys of queued workloads: their uncharged reservations stay. A pod
    reservation made less than `grace_s` before `now` is not forgotten yet. `absent` holds
    the workload keys the API server answered 404 for (among `orphan_candidates`).
    """
    pods = list(pods)
    by_key = {p.key: p for p in pods}
    by_workload: dict[str, list[PodView]] = {}
    for p in pods:
        if p.workload:
            by_workload.setdefault(p.workload, []).append(p)
    repairs: list[Repair] = []
    held: dict[str, Held] = {}
    for h in ledger:
        held[h.key] = h
        if h.key.startswith("pods/"):
            pod = by_key.get(h.key)
            if pod is None:
                if h.hold_until is not None:
                    if now >= h.hold_until:
                        repairs.append(Repair(h.key, "forget", "the pod was deleted at once and its grace period "
                                                               "for stopping its containers is over"))
                elif now - h.created_at >= grace_s:
                    repairs.append(Repair(h.key, "forget", "the pod does not exist in the cluster (its DELETE "
                                                           "was not seen, or it was refused after admission)"))
            elif pod.finished and (h.charged or h.gpus):
                repairs.append(Repair(h.key, "uncharge", f"the pod has {pod.phase.lower()}"))
            continue
        members = by_workload.get(h.key)
        if h.key in absent and not members and h.key not in waiting and now - h.created_at >= grace_s:
            repairs.append(Repair(h.key, "forget", "the object does not exist in the cluster (refused after "
                                                   "admission, or its DELETE was not seen)"))
            continue
        if h.charged and members and all(p.finished for p in members):
            repairs.append(Repair(h.key, "uncharge", f"all {len(members)} of its pods have finished"))
    for key, p in by_key.items():
        if p.gpus == 0 or p.finished or p.gated or p.deleting or key in held:
            continue
        if p.workload and (p.workload in held or p.workload in waiting):
            continue
        # Recorded as unowned: an annotation is what anyone could write, never who owns GPUs.
        claim = f" (its annotation names {p.owner})" if p.owner else ""
        repairs.append(Repair(key, "account", f"a GPU pod {p.phase.lower()} without a reservation{claim}; "
                                                f"recorded without an owner", gpus=p.gpus, uid=p.uid,
                              parent_uid=p.parent_uid))
    return repairs


def gates_to_remove(pods: Iterable[PodView], charged: Mapping[str, str]) -> list[PodView]:
    """Gated pods whose workload the ledger holds charged; `charged` maps workload key → owner.

    A pod's workload key must name its own namespace and the pod must belong to the
    workload's owner, so that a pod cannot ride on another workload's release.
    """
    out = []
    for p in pods:
        if not p.gated or not p.workload or p.deleting:
            continue
        owner = charged.get(p.workload)
        if owner is None or owner != p.owner:
            continue
        if p.workload.split("/", 2)[1:2] != [p.namespace]:
            continue
        out.append(p)
    return out


def gate_removal_patch(pod: PodView) -> list[dict[str, Any]]:
    """JSONPatch removing the quota gate, guarded by a test so a concurrent change fails it."""
    assert pod.gate_index is not None
    path = f"/spec/schedulingGates/{pod.gate_index}"
    return [{"op": "test", "path": f"{path}/name", "value": QUOTA_GATE}, {"op": "remove", "path": path}]


def gpu_capacity(nodes: Iterable[Mapping[str, Any]], gpu: GpuMatcher) -> int:
    """Sum of GPU allocatable over schedulable nodes (a cordoned node adds nothing)."""
    total = 0
    for node in nodes:
        if _obj(node.get("spec")).get("unschedulable"):
            continue
        for resource, value in _obj(_obj(node.get("status")).get("allocatable")).items():
            if gpu(resource):
                try:
                    total += int(str(value))
                except ValueError:
                    continue
    return total


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
