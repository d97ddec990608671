"""Queue mode at admission: gate the pods, queue the launch, guard the gate. Pure.

In queue mode (limits.yaml `scheduling`, per role or team) a GPU launch is admitted with an
uncharged reservation and a queue row instead of being reserved (or denied over a cap), and
every one of its pods is created behind the scheduling gate `gpu-gateway.io/quota`. Only the
gateway's own service account (the controller) may remove the gate; anything else that
removes it, or creates a pod that would be gated with `spec.nodeName` already set (which
skips the scheduler and so the gate), is denied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.admission.claims import uses_claims
from gateway.admission.decision import Action, Decision, Enqueue, Mode, Reservation, Violation
from gateway.admission.plan import Plan
from gateway.admission.pointer import annotations_at, is_object
from gateway.admission.policy import Policy
from gateway.admission.scheduling_settings import (
    MIN_PODS_ANNOTATION,
    QUOTA_GATE,
    WORKLOAD_ANNOTATION,
    BudgetQuery,
    OverQuota,
    budget_query,
    effective_priority,
)
from gateway.admission.verdict import what
from gateway.admission.workloads import CHARGES_CHILDREN, Workload

JsonPatch = list[dict[str, Any]]

#: The rule that decides gate and nodeName requests; always enforced.
GATE_RULE = "scheduling-gate"
_QUOTA_RULES = frozenset({"user-quota", "team-quota", "gpu-hour-budget"})


def workload_key(resource_key: str, namespace: str, name: str) -> str:
    """`resource/namespace/name`: how a queue row and a pod's workload annotation name a workload."""
    return f"{resource_key}/{namespace}/{name}"


def queue_mode(plan: Plan, policy: Policy) -> bool:
    """Whether a person's GPU launch waits in the queue (its owner's role or team is in queue mode)."""
    return (plan.action is Action.LAUNCH and not plan.identity.is_actor and plan.early is None
            and not plan.data_kind and plan.workload is not None and plan.workload.gpus > 0
            and not uses_claims(plan.workload)  # pods naming DRA claims are not gated: decided as in reject
            and (plan.request.kind.group, plan.request.kind.kind) not in CHARGES_CHILDREN
            and policy.scheduling.mode(plan.identity.role, plan.team) is OverQuota.QUEUE)


def stamp_annotations(plan: Plan, policy: Policy) -> dict[str, str]:
    """Annotations the mutating webhook adds beside the owner stamp: the workload key, on a
    queue-mode launch, so that its pods (created later by controllers) can be tied to it."""
    if not queue_mode(plan, policy) or plan.key is None:
        return {}
    return {WORKLOAD_ANNOTATION: workload_key(*plan.key)}


def is_pod_create(plan: Plan) -> bool:
    """Whether the request creates a Pod."""
    req = plan.request
    return req.operation == "CREATE" and req.resource == "pods" and not req.resource_group and not req.sub_resource


def gated(plan: Plan, policy: Policy) -> bool:
    """Whether a pod being created must wait behind the quota gate: a GPU pod of a queue-mode
    workload (its template carried the workload key) or a person's queue-mode bare pod."""
    if not is_pod_create(plan) or plan.early is not None or plan.workload is None or plan.workload.gpus == 0:
        return False
    return bool(annotations_at(plan.request.obj).get(WORKLOAD_ANNOTATION)) or queue_mode(plan, policy)


def gate_patch(plan: Plan, policy: Policy) -> JsonPatch:
    """JSONPatch adding the quota gate to a pod that must wait (see `gated`)."""
    if not gated(plan, policy):
        return []
    spec = plan.request.obj.get("spec") if plan.request.obj is not None else None
    gates = spec.get("schedulingGates") if is_object(spec) else None
    if isinstance(gates, list):
        if any(is_object(g) and g.get("name") == QUOTA_GATE for g in gates):
            return []
        return [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": QUOTA_GATE}}]
    return [{"op": "add", "path": "/spec/schedulingGates", "value": [{"name": QUOTA_GATE}]}]


def carries_gate(obj: Mapping[str, Any] | None) -> bool:
    """Whether a pod carries the quota scheduling gate."""
    return bool(_gates(obj))


def _gates(obj: Mapping[str, Any] | None) -> list[Any]:
    spec = obj.get("spec") if obj is not None else None
    gates = spec.get("schedulingGates") if is_object(spec) else None
    return [g for g in gates if is_object(g) and g.get("name") == QUOTA_GATE] if isinstance(gates, list) else []


def guard(plan: Plan, policy: Policy, gateway_user: str) -> Decision | None:
    """The decision on a request that touches the quota gate, or None when it does not.

    - a pod UPDATE that removes or changes the gate: allowed for `gateway_user` only;
    - creating a pod that would be gated with `spec.nodeName` set: denied for everyone.
    """
    req = plan.request
    if req.resource != "pods" or req.resource_group or req.sub_resource or plan.early is not None:
        return None
    if req.operation == "UPDATE":
        before, after = _gates(req.old_obj), _gates(req.obj)
        if not before or before == after:
            return None
        if req.username == gateway_user:
            return Decision(allowed=True, rule=GATE_RULE, action=Action.MODIFY,
                            reason=f"the gateway ({gateway_user}) releases a queued pod")
        return _deny(plan, f"only the gateway may remove the {QUOTA_GATE} scheduling gate; "
                           f"the pod waits in the GPU queue (see `gpu-gateway queue`)")
    if req.operation == "CREATE" and gated(plan, policy):
        spec = req.obj.get("spec") if req.obj is not None else None
        if is_object(spec) and spec.get("nodeName"):
            return _deny(plan, f"a GPU pod of a queued workload may not set spec.nodeName "
                               f"({spec['nodeName']}): it would skip the {QUOTA_GATE} scheduling gate")
        if not _gates(req.obj):
            # The mutating webhook adds the gate; without it (that webhook failed or is not
            # registered) the pod would start unqueued.
            return _deny(plan, f"a GPU pod of a queued workload must carry the {QUOTA_GATE} scheduling gate "
                               f"(the gateway's mutating webhook adds it)")
    return None


def _deny(plan: Plan, message: str) -> Decision:
    text = f"gpu-gateway: denied {what(plan)}: {message}."
    return Decision(allowed=False, rule=GATE_RULE, reason=text, mode=Mode.ENFORCE, action=plan.action,
                    audited=True, violations=(Violation(GATE_RULE, Mode.ENFORCE, message),))


def queued(plan: Plan, policy: Policy, decided: Decision, reserve: Reservation,
           priority_classes: set[str]) -> Decision | None:
    """In queue mode, the launch admitted to wait in the queue instead of `decided`.

    Only when nothing but the concurrent caps (user, team) objects, and the gang could fit
    those caps on its own; otherwise `decided` stands (None). An approval that lifted a
    denial admits the launch at once, as in reject mode.
    """
    workload = plan.workload
    if not queue_mode(plan, policy) or workload is None or decided.use_approval:
        return None
    if any(v.mode is Mode.ENFORCE and v.rule not in _QUOTA_RULES for v in decided.violations):
        return None
    role = plan.identity.role or ""
    for cap in (policy.role_limits(role).max_concurrent_gpus, policy.team_cap(plan.team)):
        if cap is not None and workload.gpus > cap:
            return None  # can never start: the reject-mode denial (user-quota or team-quota) stands
    allowed = {role: policy.role_limits(role).priority_classes}
    values = policy.scheduling.priority_classes
    best = max(priority_classes or {""}, key=lambda c: (effective_priority(c, role, values=values, allowed=allowed), c))
    priority = effective_priority(best, role, values=values, allowed=allowed)
    waits = "; ".join(v.message for v in decided.violations if v.rule in _QUOTA_RULES) or "queue mode"
    pods = _gang_pods(plan, workload)
    return Decision(
        allowed=True, rule="queued", mode=Mode.ENFORCE, action=Action.LAUNCH, gpus=workload.gpus, audited=True,
        reason=f"queued: {plan.identity.describe()} launches {workload.gpus} GPUs ({workload.describe_gpus()}) "
               f"in queue mode; its GPU pods wait until {pods} exist and the whole workload fits ({waits})",
        warnings=(f"gpu-gateway: {what(plan)} is queued: its pods start together once {pods} exist and "
                  f"the whole workload fits the GPU quota (see `gpu-gateway queue`)",),
        violations=decided.violations, reserve=replace(reserve, charged=False), owner=plan.owner, team=plan.team,
        enqueue=Enqueue(pods=pods, priority=priority, priority_class=best, reason=waits),
    )


def _gang_pods(plan: Plan, workload: Workload) -> int:
    """GPU pods that must exist before release: `gpu-gateway.io/min-pods` when it is a whole
    number from 1 to the workload's GPU pods, else all of them."""
    total = sum(ps.count for ps in workload.pod_sets if ps.gpus_each > 0)
    wanted = annotations_at(plan.request.obj).get(MIN_PODS_ANNOTATION)
    if isinstance(wanted, str) and wanted.isdigit() and 1 <= int(wanted) <= total:
        return int(wanted)
    return total


def launch_budget(plan: Plan, policy: Policy, now: float) -> BudgetQuery | None:
    """The GPU-hour budgets a person's GPU launch is checked against (None: none apply)."""
    if (plan.action is not Action.LAUNCH or plan.early is not None or plan.data_kind or plan.workload is None
            or (plan.workload.gpus == 0 and not uses_claims(plan.workload)) or plan.identity.is_actor):
        return None
    return budget_query(policy.scheduling, plan.owner, plan.team, now)
