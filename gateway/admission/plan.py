"""The values the decision pipeline passes along: what a request asks (Plan) and what the
ledger knows (Facts about the target and the objects it references)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.admission.actors import OwnerRef
from gateway.admission.decision import Action, Decision
from gateway.admission.dra import claim_key
from gateway.admission.identity import Identity
from gateway.admission.kinds import KindRegistry
from gateway.admission.mechanics import Reach
from gateway.admission.podspec import Reference
from gateway.admission.pointer import resolve
from gateway.admission.quota import Usage
from gateway.admission.review import AdmissionRequest
from gateway.admission.workloads import GpuMatcher, Workload, read_workload
from gateway.errors import WorkloadError

TargetKey = tuple[str, str, str]
"""(resource key, namespace, name) of a workload or pod in the ledger."""

@dataclass(frozen=True, slots=True)
class Target:
    """The ledger's record of a workload or pod the gateway admitted."""

    owner: str
    team: str
    role: str
    gpus: int
    charged: bool = True
    shape: str = "{}"
    uid: str = ""
    """The object's UID ("" in records written before UIDs were kept)."""
    root_uid: str = ""
    """The UID of the record that holds the charge for this one: its own for a workload a person
    launched (or a CronJob's Job), the root workload's for what controllers made from it."""
    waiting: bool = False
    """Whether it waits in the GPU queue (read where a controller's child needs to know)."""

    @property
    def is_root(self) -> bool:
        """Whether this record holds its own charge (not an object controllers made from one)."""
        return self.root_uid in ("", self.uid)

    @property
    def shareable(self) -> bool:
        """The owner annotated the object `gpu-gateway.io/shareable: "true"` (kept in its shape)."""
        return '"shareable":true' in self.shape and json.loads(self.shape).get("shareable") is True


@dataclass(frozen=True, slots=True)
class Approval:
    """An approved, unused, unexpired exception for one action on one object (docs/approvals.md)."""

    id: str
    requester: str
    action: str
    kind: str
    namespace: str
    name: str
    gpus: int
    approver: str = ""
    target_owner: str | None = None
    target_team: str = ""
    """For a modify, kill or exec: the workload's owner and team in the ledger when the approval
    was asked for ("" when it recorded none; None when not recorded: it lifts nothing)."""


@dataclass(frozen=True, slots=True)
class Facts:
    target: Target | None = None
    usage: Usage = field(default_factory=Usage)
    references: Mapping[TargetKey, Target] = field(default_factory=dict)
    """Ledger records of the objects the request's pods reference (data, DRA claims and claim
    templates); absent ones are unowned."""
    approvals: tuple[Approval, ...] = ()
    """Live approvals for the requester, action and object; loaded only after a denial."""
    referrers: tuple[tuple[str, str], ...] = ()
    """For the create of a data object: (owner, team) of each admitted workload in the namespace
    whose pods reference that kind and name (ledger `refs`), so nobody squats a name they await."""
    spent_budgets: tuple[str, ...] = ()
    """GPU-hour budgets of the owner or team spent this period (limits.yaml `scheduling.budgets`)."""
    parent: Target | None = None
    """For an actor's create: the record its controller ownerReference points to (by UID)."""
    root: Target | None = None
    """The record holding the charge of the target (or of the parent): itself when it is a root."""
    by_uid: Mapping[str, Target] = field(default_factory=dict)
    """Records of the objects a person's object names in its ownerReferences, by UID."""
    pods_under_root: int = 0
    """For a controller's pod: GPUs of the other pods recorded under the same root (those that
    still exist, terminating ones included; their own GPUs, without shared DRA claims), which
    with this one must fit the root's charge."""
    parent_gone: bool = False
    """For an actor's create whose parent the ledger does not hold: the parent was a recorded
    workload, deleted lately (not one that predates the gateway)."""
    roots_listed: bool = True
    """For a `/scale` of a target the ledger does not hold, where a controller lists the
    workloads that predate the gateway: whether it has listed those of the target's kind. Until
    it has, the target may be a GPU workload it has yet to record (gateway/scheduling/roots.py)."""


@dataclass(frozen=True, slots=True)
class StatedFacts:
    """What a what-if states about the ledger, laid over what the store reads: the target's
    owner given explicitly wins over the ledger's record, which wins over the stated target
    (read from the object's annotations); `claims` (the DRA claims of the same input) count as
    recorded."""

    facts: Facts
    claims: Mapping[TargetKey, Target] = field(default_factory=dict)
    explicit: bool = False

    def over(self, read: Facts) -> Facts:
        target = self.facts.target if self.explicit or read.target is None else read.target
        return replace(read, target=target, references={**read.references, **self.claims})


@dataclass(slots=True)
class Plan:
    """What a request asks for, read without the ledger.

    Treat as immutable. Not `frozen`: one is built per request, and a frozen dataclass's
    `__init__` costs several times a plain one; `old_gpus` is also cached on first use.
    """

    request: AdmissionRequest
    identity: Identity
    action: Action | None
    key: TargetKey | None = None
    workload: Workload | None = None
    owner: str = ""
    team: str = ""
    """Who a launch will belong to: the requester and their chosen (or default) team."""
    replicas: int | None = None
    old_replicas: int | None = None
    """For `/scale`: the new and old `spec.replicas`."""
    references: tuple[tuple[str, Reference], ...] = ()
    """(pod set, reference) for every PVC, ConfigMap and Secret the pods reach, when checked."""
    pod_specs: tuple[tuple[str, Mapping[str, object]], ...] = ()
    """(pod set, pod spec) checked for escape hatches: every pod set of a person's workload,
    those that ask for GPUs of an actor's."""
    data_kind: str = ""
    """Set for a PersistentVolumeClaim, ConfigMap or Secret: owned data, not a workload."""
    early: Decision | None = None
    """Set when the request is decided without the ledger (pass-through or unreadable)."""
    uid: str = ""
    """The object's UID (the API server sets it before validating admission)."""
    parent: OwnerRef | None = None
    """For an actor's create: its controller ownerReference, the parent it is made for."""
    reaches: tuple[Reach, ...] = ()
    """What a person's object makes controllers act on (admission/mechanics.py)."""
    set_labels: tuple[str, ...] = ()
    """Controller labels a person's object sets (`label (where)`)."""
    controlled_change: str = ""
    """How a person's UPDATE unbinds a controller's pod from its controller, or ""."""

    @property
    def reaches_anything(self) -> bool:
        return bool(self.reaches or self.set_labels or self.controlled_change)

    @property
    def reach_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.uid for r in self.reaches if r.uid))
    is_gpu: GpuMatcher | None = field(default=None, repr=False, compare=False)
    """The policy's GPU resources, kept to read `old_gpus`; None where the old object's GPUs
    are never needed (scales, pod subresources, requests decided early)."""
    kinds: KindRegistry | None = field(default=None, repr=False, compare=False)
    """The policy's registered workload kinds (limits.yaml `workload_kinds`), to read `old_gpus`."""
    templates: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The object's nodes by pointer, read once (admission/access.py `pod_templates`): see `node`."""
    _old_gpus: int | None = field(default=None, init=False, repr=False, compare=False)
    _old_capable: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def old_gpus(self) -> int:
        """GPUs of the old object (DELETE, UPDATE), for targets the ledger does not know.

        Read on first use: `decide` needs it only when the ledger has no record of the
        target, and reading a workload is a large share of a decision's cost.
        """
        if self._old_gpus is None:
            self._old_gpus, self._old_capable = _old_object_gpus(self.request, self.is_gpu, self.kinds)
        return self._old_gpus

    @property
    def old_gpu_capable(self) -> bool:
        """Whether the old object has a pod template that asks for GPUs, at any count."""
        if self._old_gpus is None:
            self._old_gpus, self._old_capable = _old_object_gpus(self.request, self.is_gpu, self.kinds)
        return self._old_capable

    def node(self, pointer: str) -> Any:
        """The request object's node at `pointer` (itself at "", a pod template), read once per request."""
        templates = self.templates
        return templates[pointer] if pointer in templates else resolve(self.request.obj, pointer)

    @property
    def reference_keys(self) -> tuple[TargetKey, ...]:
        """Ledger keys of the PVCs, ConfigMaps and Secrets the pods reference, and of the DRA
        claims and claim templates they name (whose records hold their GPUs)."""
        namespace = self.request.namespace
        keys = [reference_key(namespace, r) for _, r in self.references]
        if self.workload is not None:
            keys.extend(claim_key(namespace, c) for ps in self.workload.pod_sets for c in ps.claims)
        keys.extend(r.key for r in self.reaches if r.key is not None)
        return tuple(dict.fromkeys(keys))

    @property
    def display_kind(self) -> str:
        req = self.request
        if req.resource == "pods" and not req.resource_group:
            return "Pod"
        if req.sub_resource == "scale":
            return req.resource_key
        return req.kind.kind

    @property
    def display_ref(self) -> str:
        req = self.request
        name = req.name or (self.workload.name if self.workload else "")
        return f"{req.namespace}/{name}" if req.namespace else name


def _old_object_gpus(req: AdmissionRequest, is_gpu: GpuMatcher | None,
                     kinds: KindRegistry | None = None) -> tuple[int, bool]:
    if req.old_obj is None or is_gpu is None:
        return 0, False
    try:
        workload = read_workload(req.old_obj, req.kind.group, req.kind.kind, is_gpu, kinds=kinds)
    except WorkloadError:
        return 0, False  # the API server stored it; an unreadable old object asks for nothing new
    return workload.gpus, workload.gpu_capable



_RESOURCES = {"PersistentVolumeClaim": "persistentvolumeclaims", "ConfigMap": "configmaps", "Secret": "secrets",
              "ServiceAccount": "serviceaccounts", "VolumeSnapshot": "volumesnapshots.snapshot.storage.k8s.io"}


def reference_key(namespace: str, ref: Reference) -> TargetKey:
    """The ledger key of a referenced PVC, ConfigMap, Secret, ServiceAccount or VolumeSnapshot."""
    return (_RESOURCES[ref.kind], namespace, ref.name)
