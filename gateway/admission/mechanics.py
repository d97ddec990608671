"""Fields of a person's object that make a controller act on someone's objects. Pure.

A controller acts on what it believes is its own: the objects that name it in an
`ownerReference`, the pods that carry the labels it selects its pods by (it adopts them, then
deletes one to keep its count, or counts their failures against its job), the pod a
StatefulSet expects under a name, the RayCluster a RayJob's `clusterSelector` names (the job's
entrypoint runs inside it), the workload an autoscaler's `scaleTargetRef` names. Each is
decided as the action it amounts to on the object it reaches (admission/admission.py
`_mechanics_checks`): attaching to, being adopted by or scaling a workload is a `modify` of it,
running in another person's cluster is an `exec`. The labels controllers
set on the pods they make are theirs alone: a person may not set them, nor change the labels or
controller of a pod a controller manages (it would release the pod and start another).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.actors import kind_plural
from gateway.admission.pointer import is_object, labels_at, resolve

TargetKey = tuple[str, str, str]

#: Labels controllers set on the pods they make and select them by, with the controller.
CONTROLLER_LABELS: Mapping[str, str] = {
    "pod-template-hash": "Deployment/ReplicaSet",
    "controller-uid": "Job",
    "job-name": "Job",
    "batch.kubernetes.io/controller-uid": "Job",
    "batch.kubernetes.io/job-name": "Job",
    "controller-revision-hash": "StatefulSet/DaemonSet",
    "statefulset.kubernetes.io/pod-name": "StatefulSet",
    "apps.kubernetes.io/pod-index": "StatefulSet",
    "training.kubeflow.org/job-name": "Kubeflow training operator",
    "training.kubeflow.org/operator-name": "Kubeflow training operator",
    "ray.io/cluster": "KubeRay",
    "jobset.sigs.k8s.io/jobset-name": "JobSet",
    "leaderworkerset.sigs.k8s.io/name": "LeaderWorkerSet",
    "volcano.sh/job-name": "Volcano",
}

#: Autoscalers that scale the workload their `spec.scaleTargetRef` names.
_AUTOSCALERS = frozenset({("autoscaling", "HorizontalPodAutoscaler"), ("keda.sh", "ScaledObject")})

_ORDINAL = re.compile(r"^(.+)-(0|[1-9][0-9]{0,8})$")


@dataclass(frozen=True, slots=True)
class Reach:
    """One object a person's object makes a controller act on, and the action that amounts to."""

    action: str
    """The casbin action it is decided as: `modify` (attach, be adopted) or `exec` (run inside)."""
    what: str
    """How it reaches it, as a denial says it: `names ReplicaSet x as its owner`."""
    key: TargetKey | None = None
    uid: str = ""


def reaches(obj: Any, kind: str, group: str, namespace: str, *, creating: bool) -> tuple[Reach, ...]:
    """What `obj` (a person's pod or workload) makes controllers act on."""
    found: list[Reach] = []
    meta = obj.get("metadata") if is_object(obj) else None
    refs = meta.get("ownerReferences") if is_object(meta) else None
    for ref in refs if isinstance(refs, list) else ():
        if is_object(ref) and isinstance(ref.get("uid"), str) and ref["uid"]:
            found.append(Reach("modify", f"names {ref.get('kind')} {namespace}/{ref.get('name')} as its owner",
                               uid=ref["uid"]))
    if creating and kind == "Pod" and not group and is_object(meta) and isinstance(meta.get("name"), str):
        match = _ORDINAL.match(meta["name"])
        if match:
            base = match.group(1)
            found.append(Reach("modify", f"has the name StatefulSet {namespace}/{base} gives its pod "
                                         f"{match.group(2)}, so that StatefulSet would adopt it",
                               key=("statefulsets.apps", namespace, base)))
    if (group, kind) in _AUTOSCALERS:
        target = resolve(obj, "/spec/scaleTargetRef")
        if is_object(target) and isinstance(target.get("name"), str) and isinstance(target.get("kind"), str):
            api = target.get("apiVersion")
            target_group = api.rpartition("/")[0] if isinstance(api, str) else ""
            plural = kind_plural(target["kind"].lower())
            found.append(Reach("modify", f"scales {target['kind']} {namespace}/{target['name']} "
                                         f"(spec.scaleTargetRef)",
                               key=(f"{plural}.{target_group}" if target_group else plural, namespace,
                                    target["name"])))
    if kind == "RayJob" and group == "ray.io":
        selector = resolve(obj, "/spec/clusterSelector")
        cluster = selector.get("ray.io/cluster") if is_object(selector) else None
        if isinstance(cluster, str) and cluster:
            found.append(Reach("exec", f"runs its entrypoint inside RayCluster {namespace}/{cluster} "
                                       f"(spec.clusterSelector)",
                               key=(f"{kind_plural('raycluster')}.ray.io", namespace, cluster)))
    return tuple(found)


def controller_labels(nodes: Mapping[str, Any], old: Any) -> list[str]:
    """Controller labels an object sets, on itself or its pod templates (`nodes`, by pointer: the
    object at ""), that `old` did not have with the same value (`old` is None on a CREATE):
    `label (where)`, sorted."""
    found = set()
    for pointer, node in nodes.items():
        new_labels = labels_at(node)
        if not new_labels or CONTROLLER_LABELS.keys().isdisjoint(new_labels):
            continue
        old_labels = labels_at(old, pointer) if old is not None else {}
        for label in CONTROLLER_LABELS.keys() & new_labels.keys():
            if old is None or old_labels.get(label) != new_labels[label]:
                where = pointer.lstrip("/").replace("/", ".") or "metadata"
                found.add(f"{label} ({where})")
    return sorted(found)


def controlled_pod_changes(obj: Any, old: Any) -> str:
    """How an UPDATE of a pod a controller manages changes what binds it to its controller (its
    labels or controller ownerReference), or "" when it does not."""
    if old is None or not _controller(old):
        return ""
    if _controller(obj) != _controller(old):
        return "removes or changes its controller ownerReference"
    if dict(labels_at(obj)) != dict(labels_at(old)):
        return "changes its labels"
    return ""


def _controller(obj: Any) -> str:
    meta = obj.get("metadata") if is_object(obj) else None
    refs = meta.get("ownerReferences") if is_object(meta) else None
    for ref in refs if isinstance(refs, list) else ():
        if is_object(ref) and ref.get("controller") is True:
            return str(ref.get("uid"))
    return ""
