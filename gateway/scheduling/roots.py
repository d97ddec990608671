"""Workloads that predate the gateway: which listed objects the ledger records as unowned. Pure.

A GPU workload created before the gateway was installed (or while its webhook was unreachable)
has no ledger record, and a `/scale` of it carries no template: without a record it would pass
as "no GPUs". The controller lists the objects of every workload kind the gateway decides
(`root_kinds`: the built-in adapters and limits.yaml `workload_kinds`; not pods) and this module
says which of them the ledger must hold:

- `read_root` reads one listed object with the admission's own code (`read_workload`, and
  `object_shape` for the pod sets by path and how `/scale` moves them): a root is an object
  without a controller ownerReference (a Deployment's ReplicaSets, a CronJob's Jobs and every
  pod belong to their controller's root) whose templates ask for GPUs at any count (0
  replicas, suspended) or whose GPUs cannot all be counted;
- `unknown_roots` keeps those whose key the ledger does not hold, as `root` repairs: recorded
  without an owner (the unowned account), charged for what can run now as a launch would be,
  the UID kept, and decided from then on under limits.yaml `unowned_workloads` until an
  administrator assigns an owner (an UPDATE of its `gpu-gateway.io/owner` annotation by a role
  that may `reassign`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.admission.actors import controller_ref, kind_plural, object_uid
from gateway.admission.admission import kind_charges_children, object_shape
from gateway.admission.kinds import KindRegistry
from gateway.admission.pointer import is_object
from gateway.admission.policy import Policy
from gateway.admission.shape import charges_children
from gateway.admission.workloads import ADAPTERS, read_workload
from gateway.errors import WorkloadError
from gateway.scheduling.reconcile import Repair


@dataclass(frozen=True, slots=True)
class RootKind:
    """A workload kind whose objects may be roots: its API group, kind and plural resource."""

    group: str
    kind: str
    resource: str

    @property
    def resource_key(self) -> str:
        """The ledger's kind key: `resource.group` (`deployments.apps`), as admission writes it."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


def root_kinds(kinds: KindRegistry) -> tuple[RootKind, ...]:
    """Every workload kind the gateway decides but pods: the built-in adapters' and the
    registered ones (limits.yaml `workload_kinds`), in a stable order."""
    found = {(group, kind): kind_plural(kind.lower()) for group, kind in ADAPTERS if (group, kind) != ("", "Pod")}
    found.update({(spec.group, spec.kind): spec.resource for spec in kinds})
    return tuple(RootKind(group, kind, resource) for (group, kind), resource in sorted(found.items()))


def read_root(obj: Mapping[str, Any], kind: RootKind, policy: Policy) -> Repair | None:
    """The record a listed object of `kind` needs if the ledger does not hold it; None for an
    object a controller made, one without GPU templates, or one that cannot be read (admission
    refuses what it cannot read, so it never runs GPUs unseen)."""
    meta = obj.get("metadata")
    if not is_object(meta):
        return None
    parent = controller_ref(obj)
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        return None
    if namespace in policy.exempt_namespaces:
        return None
    try:
        workload = read_workload(obj, kind.group, kind.kind, policy.gpu, namespace, name, kinds=policy.kinds)
    except (WorkloadError, TypeError, ValueError):
        return None
    if not workload.gpu_capable and not workload.unresolved:
        return None
    charged = not kind_charges_children(kind.group, kind.kind, workload)
    gpus = workload.gpus
    what = f"{kind.kind} {namespace}/{name}"
    return Repair(
        f"{kind.resource_key}/{namespace}/{name}", "root",
        f"{what} ({workload.describe_gpus()}) predates the gateway's records; recorded without an owner",
        gpus=gpus, charged=charged, shape=object_shape(obj, kind.group, kind.kind, workload), uid=object_uid(obj),
        parent_uid=parent.uid if parent is not None else "",
    )


def unknown_roots(roots: Iterable[Repair], held: Collection[str],
                  recorded_roots: Mapping[str, tuple[str, str, str]] | None = None) -> list[Repair]:
    """The listed GPU objects (`read_root`) whose key (`resource/namespace/name`) the ledger does
    not hold, each once. One a controller made (a legacy Deployment's ReplicaSet) is recorded
    under the root of its controller, found among the listed objects or the ledger's records
    (`recorded_roots`: UID → the UID of the record holding its charge and that record's owner
    and team, for the records whose children are not charged one by one), held to that root's
    charge and charged nothing itself; one whose controller is neither (a ConfigMap, a kind
    without a CRD, an object that does not exist) is a root of its own."""
    listed = {r.uid: r for r in roots if r.uid}
    recorded = recorded_roots or {}
    out: dict[str, Repair] = {}
    for repair in roots:
        if repair.key in held or repair.key in out:
            continue
        root_uid, owner, team = _root_of(repair, listed, recorded)
        if root_uid and root_uid != repair.uid:
            repair = replace(repair, charged=False, root_uid=root_uid, owner=owner, team=team,
                             reason=f"{repair.reason}, held to the charge of the workload that controls it"
                                    f"{f' ({owner})' if owner else ''}")
        out[repair.key] = repair
    return list(out.values())


def _root_of(repair: Repair, listed: Mapping[str, Repair],
             recorded: Mapping[str, tuple[str, str, str]]) -> tuple[str, str, str]:
    """The UID of the root `repair`'s controller chain leads to, with its owner and team (its own
    UID, unowned, when the chain leads nowhere)."""
    seen = {repair.uid}
    current = repair
    while current.parent_uid:
        if current.parent_uid in recorded:
            return recorded[current.parent_uid]
        parent = listed.get(current.parent_uid)
        if parent is None or parent.uid in seen or charges_children(parent.shape):
            break  # a CronJob's Job is charged on its own
        seen.add(parent.uid)
        current = parent
    return (current.uid if current is not repair else repair.uid), "", ""
