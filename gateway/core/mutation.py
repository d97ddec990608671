"""The mutating half: stamp the requester as owner on a GPU workload and its pod templates.

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


def ownership_patch(plan: Plan) -> JsonPatch:
    """JSONPatch stamping owner (and team) on a GPU launch by a person; [] otherwise."""
    if plan.early is not None or plan.action is not Action.LAUNCH or plan.workload is None:
        return []
    if plan.identity.trusted_controller or plan.workload.gpus == 0:
        return []
    obj = plan.request.obj
    wanted = {OWNER_ANNOTATION: plan.owner}
    requested = annotations_at(obj).get(TEAM_ANNOTATION)
    if requested in (None, "", plan.team) and plan.team:
        wanted[TEAM_ANNOTATION] = plan.team
    ops = _stamp(obj, "", wanted)
    for pointer in template_paths(plan.workload):
        ops.extend(_stamp(obj, pointer, wanted))
    return ops
