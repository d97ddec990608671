"""The mutating half: stamp the requester as owner on what they create and the gateway governs.

Whatever the requester wrote in the owner annotation is overwritten. A team annotation
naming one of the requester's teams is kept; one naming a team that is not theirs is left
as written so that the validating webhook denies it with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.admission import Plan
from gateway.core.decision import Action
from gateway.core.pointer import annotations_at, escape, is_object, resolve
from gateway.core.policy import OWNER_ANNOTATION, TEAM_ANNOTATION
from gateway.core.workloads import template_paths

JsonPatch = list[dict[str, Any]]


def _stamp(obj: Any, pointer: str, wanted: Mapping[str, str]) -> JsonPatch:
    """Operations that make `pointer`'s metadata.annotations hold `wanted`."""
    node = resolve(obj, pointer)
    if not is_object(node):
        return []
    meta = node.get("metadata")
    if not is_object(meta):
        return [{"op": "add", "path": f"{pointer}/metadata", "value": {"annotations": dict(wanted)}}]
    annotations = meta.get("annotations")
    if not is_object(annotations):
        return [{"op": "add", "path": f"{pointer}/metadata/annotations", "value": dict(wanted)}]
    ops: JsonPatch = []
    for key, value in wanted.items():
        if annotations.get(key) != value:
            op = "replace" if key in annotations else "add"
            ops.append({"op": op, "path": f"{pointer}/metadata/annotations/{escape(key)}", "value": value})
    return ops


def ownership_patch(plan: Plan, extra: Mapping[str, str] | None = None) -> JsonPatch:
    """JSONPatch stamping owner (and team) on what a person creates and the gateway governs:
    a GPU workload with its pod and volume-claim templates, or a PVC, ConfigMap or Secret.
    `extra` annotations are stamped beside them on a GPU workload (gates.stamp_annotations)."""
    if plan.early is not None or plan.action is not Action.LAUNCH or plan.identity.trusted_controller:
        return []
    if plan.data_kind:
        return _stamp(plan.request.obj, "", _wanted(plan))
    if plan.workload is None or (plan.workload.gpus == 0 and not plan.workload.unresolved):
        return []
    obj = plan.request.obj
    wanted = {**_wanted(plan), **(extra or {})}
    ops = _stamp(obj, "", wanted)
    for pointer in (*template_paths(plan.workload), *_claim_templates(obj, plan)):
        ops.extend(_stamp(obj, pointer, wanted))
    return ops


def _wanted(plan: Plan) -> dict[str, str]:
    wanted = {OWNER_ANNOTATION: plan.owner}
    requested = annotations_at(plan.request.obj).get(TEAM_ANNOTATION)
    if requested in (None, "", plan.team) and plan.team:
        wanted[TEAM_ANNOTATION] = plan.team
    return wanted


def _claim_templates(obj: Any, plan: Plan) -> list[str]:
    """Volume-claim templates whose PVCs a controller will create from this object, so the
    claims are owned too: StatefulSet `volumeClaimTemplates` and ephemeral volumes."""
    found = []
    claims = resolve(obj, "/spec/volumeClaimTemplates")
    if isinstance(claims, list):
        found += [f"/spec/volumeClaimTemplates/{i}" for i, c in enumerate(claims) if is_object(c)]
    assert plan.workload is not None
    pod_templates = list(template_paths(plan.workload))
    if any(ps.template_path == "" for ps in plan.workload.pod_sets):
        pod_templates.append("")  # a bare Pod is its own template
    for pointer in pod_templates:
        volumes = resolve(obj, f"{pointer}/spec/volumes")
        if not isinstance(volumes, list):
            continue
        for i, volume in enumerate(volumes):
            if is_object(volume) and is_object(resolve(volume, "/ephemeral/volumeClaimTemplate")):
                found.append(f"{pointer}/spec/volumes/{i}/ephemeral/volumeClaimTemplate")
    return found
