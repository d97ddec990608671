"""DRA GPUs at decide time, and ResourceClaims and ResourceClaimTemplates as owned objects. Pure.

How many GPUs a claim or claim template asks for is read from the object when it is created
(admission/dra.py) and kept in its ledger record. A workload's pods only name them, so `with_claims`
adds what the ledger recorded (`Facts.references`) to the workload before any cap is checked:
a template's GPUs to every pod of the pod sets naming it (the resourceclaim controller makes
one claim per pod), a shared claim's GPUs once for the whole workload. A name the ledger does
not know (created before the gateway) leaves the GPUs uncounted: rule `unresolved-gpus`.

Claims and templates are owned like volume claims (admission/owned_data.py): stamped with their
creator, changed and deleted by whom `modify` and `kill` allow. An UPDATE may not make them
ask for more GPUs (rule `claim-growth`): workloads that name them were counted with the old
number. A claim the resourceclaim controller makes from a template belongs to the owner of
the pod it is made for, and may hold no more GPUs than the pod was counted for with that
template (the template may have been replaced in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.admission.access import collect
from gateway.admission.actors import kind_name
from gateway.admission.decision import Action, Decision, Mode, Reservation, Violation
from gateway.admission.dra import (
    CLAIM,
    GROUP,
    POD_CLAIM_ANNOTATION,
    TEMPLATE,
    PodClaim,
    claim_key,
    claim_shape,
    counted_claims,
    object_gpus,
    recorded_gpus,
)
from gateway.admission.owned_data import decide_data
from gateway.admission.plan import Facts, Plan, Target
from gateway.admission.pointer import annotations_at
from gateway.admission.policy import RULES, SHAREABLE_ANNOTATION, Policy
from gateway.admission.quantity import MAX_GPUS
from gateway.admission.verdict import conclude, violation, what
from gateway.admission.workloads import PodSet, Workload, read_workload
from gateway.errors import WorkloadError


def uses_claims(workload: Workload | None) -> bool:
    """Whether any pod of the workload names a DRA claim or claim template."""
    return workload is not None and any(ps.claims for ps in workload.pod_sets)


def capped(policy: Policy, user: str, role: str | None, team: str) -> bool:
    """Whether any GPU cap applies to `user` of `role` in `team`."""
    return any(cap is not None for cap in (policy.role_limits(role).max_gpus_per_workload,
                                           policy.user_cap(user, role), policy.team_cap(team)))


# ---------------------------------------------------------------- workloads that name claims


def with_claims(plan: Plan, policy: Policy, facts: Facts) -> tuple[Plan, Decision | None]:
    """`plan` with the DRA GPUs of its workload counted from the ledger, and the decision
    when that settles the request (an actor's object whose claims hold no GPUs, an absurd
    count, an actor's object whose claims the ledger does not know for a capped owner)."""
    workload, req, ident = plan.workload, plan.request, plan.identity
    assert workload is not None
    sets = _counted(workload, req.namespace, facts)
    reasons = _unknown_reasons(plan, policy, [c for ps in sets for c in ps.claims if c.gpus is None])
    counted = Workload(workload.kind, workload.group, workload.namespace, workload.name, sets,
                       unresolved=(*workload.unresolved, *reasons))
    if counted.gpus > MAX_GPUS:
        message = (f"gpu-gateway: denied {what(plan)}: cannot read the object: its DRA claims ask for an "
                   f"absurd number of GPUs ({counted.gpus}). {RULES['unreadable-object']}")
        return plan, Decision(allowed=False, rule="unreadable-object", reason=message, action=plan.action,
                              audited=True)
    specs = collect(req.obj, counted, policy, gpu_only=plan.identity.is_actor, templates=plan.templates)[1] \
        if req.obj is not None else plan.pod_specs
    plan = replace(plan, workload=counted, pod_specs=specs)
    if ident.is_actor and plan.action is Action.LAUNCH:
        if not counted.gpu_capable and not counted.unresolved:
            return plan, Decision(allowed=True, rule="not-governed", reason="asks for no GPUs", action=Action.LAUNCH)
        return plan, _unknown_for_owner(plan, policy, facts.parent, reasons)
    return plan, None


def _counted(workload: Workload, namespace: str, facts: Facts) -> tuple[PodSet, ...]:
    """The workload's pod sets with each claim's recorded GPUs: a template's in every pod, and a
    pod set of its own for each shared claim's (held once, whatever the pod count)."""
    sets: list[PodSet] = []
    shared: dict[str, int] = {}
    for ps in workload.pod_sets:
        if not ps.claims:
            sets.append(ps)
            continue
        per_pod = dict(ps.gpus_per_pod)
        claims = []
        for claim in ps.claims:
            record = facts.references.get(claim_key(namespace, claim))
            gpus = recorded_gpus(record.shape) if record is not None else None
            claims.append(replace(claim, gpus=gpus))
            if gpus is None or not gpus:
                continue
            if claim.shared:
                shared[claim.ref] = gpus
            else:
                key = f"GPUs of {TEMPLATE} {claim.ref}"
                per_pod[key] = per_pod.get(key, 0) + gpus
        sets.append(PodSet(ps.name, ps.count, per_pod, ps.template_path, ps.surge, claims=tuple(claims)))
    sets.extend(PodSet(f"{CLAIM} {name}", 1, {f"GPUs of {CLAIM} {name}": gpus}, None, shared=True)
                for name, gpus in shared.items())
    return tuple(sets)


def _unknown_reasons(plan: Plan, policy: Policy, unknown: Sequence[PodClaim]) -> tuple[str, ...]:
    """Why GPUs are uncounted: claims the ledger does not know, less those an UPDATE keeps
    from the old object (a change elsewhere adds nothing uncounted)."""
    req = plan.request
    if unknown and plan.action is Action.MODIFY and req.old_obj is not None:
        try:
            old = read_workload(req.old_obj, req.kind.group, req.kind.kind, policy.gpu, kinds=policy.kinds)
            before = {(c.kind, c.ref) for ps in old.pod_sets for c in ps.claims}
        except WorkloadError:
            before = set()
        unknown = [c for c in unknown if (c.kind, c.ref) not in before]
    named = list(dict.fromkeys((c.kind, c.ref) for c in unknown))
    if not named:
        return ()
    listed = " and ".join(f"{kind} {ref}" for kind, ref in named)
    one = len(named) == 1
    return (f"names {listed}, which the gateway has no record of (created before the gateway was "
            f"installed), so the GPUs its pods get through DRA cannot be counted; create "
            f"{'a new one' if one else 'new ones'} (the gateway records {'its' if one else 'their'} GPUs) "
            f"and name {'it' if one else 'them'} instead",)


def _unknown_for_owner(plan: Plan, policy: Policy, parent: Target | None, reasons: tuple[str, ...]) -> Decision | None:
    """An actor's object whose claims the ledger does not know is denied when the owner it is
    made for has GPU caps: it could not be checked against what the owner was charged for."""
    if not reasons or parent is None or not parent.owner or not capped(policy, parent.owner, parent.role or None,
                                                                        parent.team):
        return None
    found = violation(policy, "unresolved-gpus",
        f"its owner {parent.owner} (role {parent.role or 'none'}) has GPU caps, so the gateway must count every "
        f"GPU, and {plan.display_kind} {plan.display_ref} {'; and it '.join(reasons)}")
    if found.mode is not Mode.ENFORCE:
        return None
    gpus = plan.workload.gpus if plan.workload is not None else 0
    return conclude(plan, [found], allow_rule="actor", allow_reason="", gpus=gpus, owner=parent.owner,
                    team=parent.team)


# ---------------------------------------------------------------- the claims themselves


def decide_claim(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    """A CREATE, UPDATE or DELETE of a ResourceClaim or ResourceClaimTemplate."""
    req, ident, kind = plan.request, plan.identity, plan.data_kind
    if req.obj is not None:
        gpus = object_gpus(kind, req.obj, policy.dra)
    else:
        held = recorded_gpus(facts.target.shape) if facts.target is not None else None
        gpus = held if held is not None else object_gpus(kind, req.old_obj, policy.dra)
    if ident.is_actor and plan.action is Action.LAUNCH and kind == CLAIM:
        return _made_for_pod(plan, policy, facts, gpus)
    decided = decide_data(plan, policy, facts)
    shareable = str(annotations_at(req.obj).get(SHAREABLE_ANNOTATION, "")).lower() == "true"
    reserve = decided.reserve and replace(decided.reserve, shape=claim_shape(gpus, shareable=shareable))
    decided = replace(decided, gpus=gpus, reserve=reserve)
    if plan.action is not Action.MODIFY or not decided.allowed:
        return decided
    before = recorded_gpus(facts.target.shape) if facts.target is not None else None
    if before is None:
        before = object_gpus(kind, req.old_obj, policy.dra)
    if gpus <= before:
        return decided
    grown = violation(policy, "claim-growth",
        f"{kind} {plan.display_ref} would ask for {gpus} GPUs; it asked for {before}, and the workloads that "
        f"name it were counted with {before}")
    return conclude(plan, [*decided.violations, grown], allow_rule=decided.rule, allow_reason=decided.reason,
                    gpus=gpus, reserve=reserve, owner=decided.owner, team=decided.team)


def _made_for_pod(plan: Plan, policy: Policy, facts: Facts, gpus: int) -> Decision:
    """A claim an actor (the resourceclaim controller) makes for a pod from the pod's template:
    it belongs to the pod's owner. With GPUs, the pod must be one the ledger knows, and the
    claim may hold no more GPUs than the pod was counted for with that template."""
    ident, req, ref = plan.identity, plan.request, plan.parent
    spec = policy.actors.find(ident.user)
    violations: list[Violation] = []
    if gpus and (spec is None or not spec.may_create(GROUP, CLAIM)):
        listed = ", ".join(sorted(spec.creates)) if spec is not None and spec.creates else "none"
        violations.append(violation(policy, "actor-scope",
            f"controller {ident.user} may not create {kind_name(GROUP, CLAIM)} objects with GPUs "
            f"(it may create: {listed})"))
        return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=gpus)
    pod = facts.parent if ref is not None and ref.kind == "Pod" and not ref.group else None
    if pod is None:
        if gpus:
            made_for = f"{ref.describe()}, which the gateway's ledger does not know" if ref is not None \
                else "no pod (it has no controller ownerReference)"
            violations.append(violation(policy, "unresolved-gpus",
                f"{CLAIM} {plan.display_ref} asks for {gpus} GPUs and is made for {made_for}, so nobody was "
                f"charged for them", hint="Delete the pod and let its workload make it again, or create it "
                                          "again, so that the gateway counts its GPUs."))
            return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=gpus)
        return Decision(allowed=True, rule="actor", action=plan.action,
                        reason=f"created by controller {ident.user}; asks for no GPUs",
                        reserve=Reservation("", "", "", 0, False, claim_shape(0), uid=plan.uid))
    assert ref is not None
    entry = annotations_at(req.obj).get(POD_CLAIM_ANNOTATION)
    counted = (counted_claims(pod.shape, "") or {}).get(entry, 0) if isinstance(entry, str) else 0
    if gpus > counted and capped(policy, pod.owner, pod.role or None, pod.team):
        violations.append(violation(policy, "root-allowance",
            f"{CLAIM} {plan.display_ref}, made for claim {entry or '(unnamed)'} of pod {ref.name}, would hold "
            f"{gpus} GPUs; the pod was counted for {counted} with it (its ResourceClaimTemplate changed after "
            f"the pod was admitted)", hint="Delete the pod so that it is made and counted again with the "
                                           "template as it is now."))
    reserve = Reservation(pod.owner, pod.team, pod.role, 0, False, claim_shape(gpus), uid=plan.uid)
    whose = f"{pod.owner or 'unowned'}'s pod {ref.name}"
    if violations:
        return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=gpus, reserve=reserve,
                        owner=pod.owner, team=pod.team)
    if gpus > counted:  # an owner without caps: admitted, and audited
        return Decision(allowed=True, rule="actor", action=plan.action, gpus=gpus, reserve=reserve,
                        owner=pod.owner, team=pod.team, audited=True,
                        reason=f"created by controller {ident.user} for {whose}: {gpus} GPUs, of which the pod "
                               f"was counted for {counted}")
    return Decision(allowed=True, rule="actor", action=plan.action, gpus=gpus, reserve=reserve,
                    owner=pod.owner, team=pod.team,
                    reason=f"created by controller {ident.user} for {whose} ({gpus} GPUs, counted with the pod)")
