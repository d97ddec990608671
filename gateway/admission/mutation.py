"""The mutating half: stamp the requester as owner on what they create and the gateway governs.

Whatever the requester wrote in the owner annotation is overwritten. A team annotation
naming one of the requester's teams is kept; one naming a team that is not theirs is left
as written so that the validating webhook denies it with a clear message. Owner and team are
stamped as labels too, in their label-safe form (admission/labels.py), wherever the annotations are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.admission.admission import Plan
from gateway.admission.claims import uses_claims
from gateway.admission.decision import Action
from gateway.admission.labels import OWNER_LABEL, owner_labels
from gateway.admission.pointer import annotations_at, escape, is_object, labels_at, resolve
from gateway.admission.policy import OWNER_ANNOTATION, TEAM_ANNOTATION
from gateway.admission.scheduling_settings import WORKLOAD_ANNOTATION
from gateway.admission.workloads import stamped_paths

JsonPatch = list[dict[str, Any]]


def _stamp(obj: Any, pointer: str, wanted: Mapping[str, str], *, labels: bool = True) -> JsonPatch:
    """Operations that make `pointer`'s metadata.annotations hold `wanted`, and (with `labels`)
    its metadata.labels the owner and team labels that go with them."""
    node = resolve(obj, pointer)
    if not is_object(node):
        return []
    fields = {"annotations": dict(wanted), "labels": owner_labels(wanted) if labels else {}}
    fields = {name: values for name, values in fields.items() if values}
    meta = node.get("metadata")
    if not is_object(meta):
        return [{"op": "add", "path": f"{pointer}/metadata", "value": fields}]
    ops: JsonPatch = []
    for name, values in fields.items():
        current = meta.get(name)
        if not is_object(current):
            ops.append({"op": "add", "path": f"{pointer}/metadata/{name}", "value": values})
            continue
        for key, value in values.items():
            if current.get(key) != value:
                op = "replace" if key in current else "add"
                ops.append({"op": op, "path": f"{pointer}/metadata/{name}/{escape(key)}", "value": value})
    return ops


def ownership_patch(plan: Plan, extra: Mapping[str, str] | None = None) -> JsonPatch:
    """JSONPatch stamping owner (and team) on what a person creates and the gateway governs:
    a GPU workload (at any size, or naming DRA claims) with its pod, job and volume-claim
    templates, or a PVC, ConfigMap, Secret, ResourceClaim or ResourceClaimTemplate. `extra`
    annotations are stamped beside them on a GPU workload (gates.stamp_annotations). On an UPDATE
    of a GPU workload, the templates are stamped again from the object's own stamp, so that no
    edit leaves a template unowned."""
    if plan.early is not None or plan.identity.is_actor:
        return []
    if plan.data_kind:
        return _stamp(plan.request.obj, "", _wanted(plan)) if plan.action is Action.LAUNCH else []
    if plan.workload is None:
        return []
    if plan.action is Action.MODIFY and plan.request.sub_resource == "":
        return _restamp(plan)
    if plan.action is not Action.LAUNCH or not (plan.workload.gpu_capable or plan.workload.unresolved
                                                or uses_claims(plan.workload)):
        return []
    wanted = {**_wanted(plan), **(extra or {})}
    return _stamp_all(plan, wanted)


def _stamp_all(plan: Plan, wanted: Mapping[str, str], *, labels: bool = True) -> JsonPatch:
    assert plan.workload is not None
    obj = plan.request.obj
    ops: JsonPatch = []
    for pointer in stamped_paths(obj, plan.workload):
        ops.extend(_stamp(obj, pointer, wanted, labels=labels))
    return ops


def _restamp(plan: Plan) -> JsonPatch:
    """The stamps of the old object (owner, team, queue key), or the new owner and team where
    the UPDATE changes them (a reassignment the validating webhook decides), on every template.

    The labels only where the old object carries the owner label: a workload admitted before
    labels were stamped does not get them on an UPDATE (new labels in a pod template would
    restart a Deployment's pods, a Job's template cannot change, and a controller that manages
    a pod would see its labels change)."""
    assert plan.workload is not None
    req = plan.request
    old, new = annotations_at(req.old_obj), annotations_at(req.obj)
    if not old.get(OWNER_ANNOTATION) or not (plan.workload.gpu_capable or plan.old_gpu_capable
                                             or uses_claims(plan.workload)):
        return []
    wanted: dict[str, str] = {}
    for key in (OWNER_ANNOTATION, TEAM_ANNOTATION, WORKLOAD_ANNOTATION):
        value = new.get(key) or old.get(key)
        if isinstance(value, str) and value:
            wanted[key] = value
    return _stamp_all(plan, wanted, labels=OWNER_LABEL in labels_at(req.old_obj))


def _wanted(plan: Plan) -> dict[str, str]:
    wanted = {OWNER_ANNOTATION: plan.owner}
    requested = annotations_at(plan.request.obj).get(TEAM_ANNOTATION)
    if requested in (None, "", plan.team) and plan.team:
        wanted[TEAM_ANNOTATION] = plan.team
    return wanted
