"""Which requests the failure policy may refuse: only those that may concern GPUs.

When the ledger cannot be reached, a request is let through unless it may add, keep or
act on GPUs: objects that ask for none and name no DRA claim (and PersistentVolumeClaims,
ConfigMaps, Secrets and DRA claims and templates people create) are never blocked by a
database fault. Pod subresources (exec, attach, eviction) and
`/scale` carry no pod template, so without the ledger they cannot be told apart and take
the failure policy.
"""

from __future__ import annotations

from gateway.admission.claims import uses_claims
from gateway.admission.decision import Action
from gateway.admission.dra import CLAIM
from gateway.admission.plan import Plan
from gateway.errors import GatewayError


def asks_for_gpus(plan: Plan) -> bool:
    """Whether the failure policy applies to `plan` when the store fails (True when unsure)."""
    if plan.data_kind:
        # A claim the resourceclaim controller makes for a pod may hold GPUs only the ledger can check.
        return plan.data_kind == CLAIM and plan.identity.is_actor and plan.action is Action.LAUNCH
    if plan.request.sub_resource:
        return True
    if plan.workload is not None:
        if plan.workload.gpus > 0 or plan.workload.unresolved or uses_claims(plan.workload):
            return True
        return plan.action is Action.MODIFY and _old_gpus(plan) > 0
    if plan.action is Action.KILL and plan.is_gpu is not None:
        return _old_gpus(plan) > 0
    return True


def _old_gpus(plan: Plan) -> int:
    """GPUs of the old object; an unreadable one counts as asking (the safe side)."""
    if plan.is_gpu is None:
        return 0
    try:
        return plan.old_gpus
    except GatewayError:
        return 1
