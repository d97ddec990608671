"""The decision pipeline: AdmissionRequest → Plan (what is asked) → Decision (with facts).

`prepare` needs only the request and the policy. `decide` also needs `Facts`: what the
ledger holds about the target and the owner's current usage, which the store reads inside
the same transaction that will write the reservation, so caps hold under concurrency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from gateway.admission.access import (
    PodSpecs,
    access_checks,
    collect,
    hatch_checks,
    pod_templates,
    reaches,
    referenced_names,
)
from gateway.admission.actors import OwnerRef, controller_ref, kind_name, object_uid
from gateway.admission.approvals import ask_approval, bound
from gateway.admission.claims import decide_claim, uses_claims, with_claims
from gateway.admission.decision import Action, Decision, Mode, Reservation, Violation
from gateway.admission.dra import is_claim_kind
from gateway.admission.gates import GATE_RULE, carries_gate, is_pod_create, queued
from gateway.admission.identity import Grant, Identity, with_grants
from gateway.admission.labels import label_checks
from gateway.admission.mechanics import Reach, controlled_pod_changes, controller_labels
from gateway.admission.mechanics import reaches as reaches_of
from gateway.admission.owned_data import data_references, decide_data, is_data_kind
from gateway.admission.plan import Facts, Plan, Target, TargetKey
from gateway.admission.podspec import Reference
from gateway.admission.pointer import annotations_at, is_object, labels_at
from gateway.admission.policy import OWNER_ANNOTATION, RULES, TEAM_ANNOTATION, Policy, relation
from gateway.admission.quota import CapFigure, Usage, check_caps
from gateway.admission.review import AdmissionRequest
from gateway.admission.scheduling_settings import WORKLOAD_ANNOTATION
from gateway.admission.shape import admitted_classes, charges_children, max_gpus_per_pod, scaled, surges
from gateway.admission.shape import shape_of as _shape_json
from gateway.admission.verdict import admit, conclude, denial, overruled, violation
from gateway.admission.workloads import (
    CHARGES_CHILDREN,
    TEMPLATES_ELSEWHERE,
    Workload,
    read_workload,
    scale_rule,
    stamped_paths,
    template_paths,
)
from gateway.errors import WorkloadError

__all__ = ["Facts", "Plan", "Target", "TargetKey", "caps_checked", "classify", "decide", "kind_charges_children",
           "object_shape", "prepare", "shape_of"]

_POD_SUBRESOURCES = {
    ("CONNECT", "exec"): Action.EXEC,
    ("CONNECT", "attach"): Action.EXEC,
    ("CONNECT", "portforward"): Action.EXEC,
    ("UPDATE", "ephemeralcontainers"): Action.EXEC,
    ("CREATE", "eviction"): Action.KILL,
}
_MAIN = {"CREATE": Action.LAUNCH, "UPDATE": Action.MODIFY, "DELETE": Action.KILL}
_SCOPE_PHRASE = {"own": "their own workloads", "team-shared": "their team's shared workloads",
                 "team": "their team's workloads", "any": "any workload"}


def classify(req: AdmissionRequest) -> Action | None:
    """The governed action a request is, or None (status updates, other subresources)."""
    if req.resource == "pods" and not req.resource_group and req.sub_resource:
        return _POD_SUBRESOURCES.get((req.operation, req.sub_resource))
    if req.sub_resource == "scale":
        return Action.MODIFY if req.operation == "UPDATE" else None
    if req.sub_resource:
        return None
    return _MAIN.get(req.operation)


def _pass(action: Action | None, reason: str) -> Decision:
    return Decision(allowed=True, rule="not-governed", reason=reason, action=action)


def _replicas(obj: Mapping[str, Any] | None) -> int | None:
    spec = obj.get("spec") if obj else None
    value = spec.get("replicas") if is_object(spec) else None
    if value is None:
        return 0 if spec is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkloadError(f"spec.replicas must be a non-negative integer, not {value!r}")
    return value


def prepare(req: AdmissionRequest, policy: Policy, grants: tuple[Grant, ...] = ()) -> Plan:
    """What `req` asks; `grants` are the live break-glass grants, which may raise the requester's role."""
    identity = policy.identity(req.username, req.groups)
    if grants:
        identity = with_grants(identity, grants, policy.role_order)
    action = classify(req)
    if action is None:
        return Plan(req, identity, action, early=_pass(None, "not a governed action"))
    if req.namespace in policy.exempt_namespaces:
        return Plan(req, identity, action, early=_pass(action, f"namespace {req.namespace} is exempt"))
    if action in (Action.EXEC, Action.KILL) and req.sub_resource:
        return Plan(req, identity, action, key=("pods", req.namespace, req.name))
    if is_data_kind(req.kind.group, req.kind.kind) and not req.sub_resource:
        return _prepare_data(req, identity, action)
    if is_claim_kind(req.kind.group, req.kind.kind) and not req.sub_resource:
        return _prepare_claim(req, identity, action)
    try:
        return _prepare_object(req, identity, action, policy)
    except WorkloadError as exc:
        plan = Plan(req, identity, action)
        return replace(plan, early=_unreadable(plan, str(exc)))


def _prepare_object(req: AdmissionRequest, identity: Identity, action: Action, policy: Policy) -> Plan:
    if req.sub_resource == "scale":
        return Plan(
            req, identity, action,
            key=(req.resource_key, req.namespace, req.name),
            replicas=_replicas(req.obj),
            old_replicas=_replicas(req.old_obj),
        )
    workload = None
    if req.obj is not None and action is not Action.KILL:
        workload = read_workload(req.obj, req.kind.group, req.kind.kind, policy.gpu, req.namespace, req.name,
                                 kinds=policy.kinds)
    key = (req.resource_key, req.namespace, req.name or (workload.name if workload else ""))
    refs: tuple[tuple[str, Reference], ...] = ()
    specs: PodSpecs = ()
    templates = pod_templates(req.obj, workload) if workload is not None else {}
    # An actor's objects without GPUs are its own business; with GPUs, they are checked for
    # the owner they are made for. DRA claims may hold GPUs: their counts are in the ledger.
    # A person's pods are checked for escape hatches with or without GPUs.
    claims = uses_claims(workload)
    if workload is not None and (not identity.is_actor or workload.gpu_capable or claims):
        refs, specs = collect(req.obj, workload, policy, gpu_only=identity.is_actor, templates=templates)
    reach: tuple[Reach, ...] = ()
    labels: tuple[str, ...] = ()
    unbinds = ""
    if workload is not None and not identity.is_actor and action in (Action.LAUNCH, Action.MODIFY):
        creating = req.operation == "CREATE"
        reach = reaches_of(req.obj, req.kind.kind, req.kind.group, req.namespace, creating=creating)
        labels = tuple(controller_labels(templates, None if creating else req.old_obj))
        if req.resource == "pods" and not req.resource_group and not creating:
            unbinds = controlled_pod_changes(req.obj, req.old_obj)
    if action is Action.LAUNCH and workload is not None and not workload.gpu_capable \
            and not workload.unresolved and not claims and not (reach or labels) \
            and (identity.is_actor or (req.kind.group, req.kind.kind) not in TEMPLATES_ELSEWHERE) \
            and (identity.is_actor or not _names_an_owner(req.obj, workload)) \
            and not reaches(Plan(req, identity, action, references=refs, pod_specs=specs), policy):
        return Plan(req, identity, action, key=key, workload=workload, early=_pass(Action.LAUNCH, "asks for no GPUs"))
    owner = team = ""
    if action in (Action.LAUNCH, Action.MODIFY) and not identity.is_actor:
        owner, team = _owner_and_team(req, identity)
    parent = None
    if identity.is_actor and action is Action.LAUNCH:
        parent = controller_ref(req.obj)
    elif identity.is_actor and action is Action.MODIFY:
        parent = _adopting(req)
    uid = object_uid(req.obj) or object_uid(req.old_obj)
    return Plan(req, identity, action, key=key, workload=workload, owner=owner, team=team, is_gpu=policy.gpu,
                kinds=policy.kinds, references=refs, pod_specs=specs, uid=uid, parent=parent,
                reaches=reach, set_labels=labels, controlled_change=unbinds, templates=templates)


def _adopting(req: AdmissionRequest) -> OwnerRef | None:
    """The controller an actor's UPDATE makes the object's controller (an adoption), if any."""
    new = controller_ref(req.obj)
    old = controller_ref(req.old_obj)
    return new if new is not None and (old is None or old.uid != new.uid) else None


def _owner_and_team(req: AdmissionRequest, identity: Identity) -> tuple[str, str]:
    """The requester and their chosen team own a launch, and a modify of an object the ledger
    does not know that makes it ask for GPUs; a known target keeps its owner."""
    requested = annotations_at(req.obj).get(TEAM_ANNOTATION)
    team = requested if isinstance(requested, str) and requested in identity.teams else identity.default_team
    return identity.user, team


def _prepare_data(req: AdmissionRequest, identity: Identity, action: Action) -> Plan:
    meta = req.obj.get("metadata") if req.obj is not None else None
    name = req.name or (str(meta.get("name") or "") if is_object(meta) else "")
    owner, team = _owner_and_team(req, identity) if action is Action.LAUNCH else ("", "")
    refs = data_references(req.kind.group, req.kind.kind, req.obj) \
        if action is Action.LAUNCH and not identity.is_actor else ()
    return Plan(req, identity, action, key=(req.resource_key, req.namespace, name), owner=owner, team=team,
                data_kind=req.kind.kind, references=refs)


def _prepare_claim(req: AdmissionRequest, identity: Identity, action: Action) -> Plan:
    """A DRA ResourceClaim or ResourceClaimTemplate: an owned object (admission/claims.py); an
    actor's new claim is made for the pod its controller ownerReference names."""
    parent = None
    if identity.is_actor and action is Action.LAUNCH:
        parent = controller_ref(req.obj)
    elif identity.is_actor and action is Action.MODIFY:
        parent = _adopting(req)
    return replace(_prepare_data(req, identity, action), parent=parent, uid=object_uid(req.obj or req.old_obj))


def _unreadable(plan: Plan, why: str) -> Decision:
    message = (
        f"gpu-gateway: denied {plan.action.value if plan.action else 'request'} of "
        f"{plan.display_kind} {plan.display_ref}: cannot read the object: {why}. "
        f"{RULES['unreadable-object']}"
    )
    return Decision(
        allowed=False, rule="unreadable-object", reason=message, action=plan.action, audited=True
    )


def shape_of(req: AdmissionRequest, workload: Workload, priority_classes: Iterable[str] | None = None) -> str:
    """JSON kept with a reservation (admission/shape.py): pod sets by path, how `/scale` moves them,
    whether each child is charged on its own (a CronJob's Jobs), and the priority classes the
    workload was admitted with (given only where they were checked against its owner's role)."""
    return object_shape(req.obj or {}, req.kind.group, req.kind.kind, workload, priority_classes)


def object_shape(obj: Mapping[str, Any], group: str, kind: str, workload: Workload,
                 priority_classes: Iterable[str] | None = None) -> str:
    """`shape_of` for an object of API `group` and `kind` read outside a request (the controller's
    listing of the workloads that predate the gateway, gateway/scheduling/roots.py)."""
    try:
        rule = scale_rule(obj, group, kind, _own_pod_sets(workload))
    except WorkloadError:
        rule = None
    return _shape_json(workload, rule, charge_children=kind_charges_children(group, kind, workload),
                       priority_classes=priority_classes)


def _own_pod_sets(workload: Workload) -> Workload:
    """The workload without the GPUs of shared DRA claims (admission/claims.py), which `/scale` never moves."""
    if not any(ps.shared for ps in workload.pod_sets):
        return workload
    return replace(workload, pod_sets=tuple(ps for ps in workload.pod_sets if not ps.shared))


def charges_children_of(req: AdmissionRequest, workload: Workload) -> bool:
    """Whether what controllers make from this workload is charged piece by piece: kinds whose
    size is not in the object (CronJob, DaemonSet), and workloads whose GPUs cannot be read."""
    return kind_charges_children(req.kind.group, req.kind.kind, workload)


def kind_charges_children(group: str, kind: str, workload: Workload) -> bool:
    """`charges_children_of` for a workload of API `group` and `kind`."""
    return (group, kind) in CHARGES_CHILDREN or bool(workload.unresolved)


# ------------------------------------------------------------------ decide


def decide(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    """Decide a prepared request given the ledger's facts. Pure: no I/O, no clock."""
    if plan.early is not None:
        return plan.early
    if plan.data_kind:
        if is_claim_kind(plan.request.kind.group, plan.data_kind):
            return decide_claim(plan, policy, facts)
        return decide_data(plan, policy, facts)
    if facts.approvals:  # only those still bound to the workload's recorded owner
        facts = replace(facts, approvals=tuple(a for a in facts.approvals if bound(a, facts.target)))
    if uses_claims(plan.workload):
        plan, settled = with_claims(plan, policy, facts)  # DRA GPUs, from the ledger
        if settled is not None:
            return settled
    action = plan.action
    if action is Action.LAUNCH:
        return _launch(plan, policy, facts)
    if action is Action.MODIFY:
        return _modify(plan, policy, facts)
    return _touch(plan, policy, facts)


def _stamp_checks(plan: Plan, policy: Policy, workload: Workload, violations: list[Violation],
                  old: Any = None) -> None:
    """The owner and team a person's object names, as annotations or labels, wherever the gateway
    stamps them (`stamped_paths`: the object, its pod templates, and the templates controllers
    make objects and claims from), must be theirs: the gateway stamps them (admission/mutation.py,
    admission/labels.py), and people and tools read them to say who runs what, with GPUs or without.
    With `old` (an UPDATE of an object the ledger does not hold), only what the request changes
    is checked."""
    req, ident = plan.request, plan.identity
    paths = stamped_paths(req.obj, workload, plan.templates)
    named: list[tuple[str, Mapping[str, Any]]] = []
    labelled = False
    for p in paths:  # one read of each place's metadata: most name nobody
        node = plan.node(p)
        meta = node.get("metadata") if is_object(node) else None
        if not meta or not is_object(meta):
            continue
        ann, labels = meta.get("annotations"), meta.get("labels")
        if ann and is_object(ann) and (OWNER_ANNOTATION in ann or TEAM_ANNOTATION in ann):
            named.append((p, ann))
        if labels and is_object(labels) and (OWNER_ANNOTATION in labels or TEAM_ANNOTATION in labels):
            labelled = True
    if not named and old is None and not labelled:
        return  # names nobody anywhere: the usual object before the mutating webhook stamps it
    spoofed = _named_others(named, OWNER_ANNOTATION, (ident.user,), old)
    if spoofed:
        violations.append(violation(policy, "owner-annotation",
            f"the object names {', '.join(spoofed)} as owner, but {ident.user} is "
            f"{'creating' if old is None else 'changing'} it"))
    teams = _named_others(named, TEAM_ANNOTATION, ident.teams, old)
    if teams:
        mine = ", ".join(ident.teams) or "none"
        violations.append(violation(policy, "team-annotation",
            f"{ident.describe()} is not in team {', '.join(teams)} (their teams: {mine})"))
    elif not spoofed:
        label_checks(plan, policy, plan.owner, plan.team, paths, violations)


def _names_an_owner(obj: Any, workload: Workload) -> bool:
    """Whether anything the gateway stamps in the object carries an owner or team annotation or label."""
    keys = (OWNER_ANNOTATION, TEAM_ANNOTATION)
    return any(key in annotations_at(obj, pointer) or key in labels_at(obj, pointer)
               for pointer in stamped_paths(obj, workload) for key in keys)


def _named_others(named: list[tuple[str, Mapping[str, Any]]], key: str, mine: tuple[str, ...],
                  old: Any = None) -> list[str]:
    """The values of annotation `key` in `named` ((pointer, annotations) of the request's object)
    that are not `mine` (and, given `old`, not already there at the same place), sorted."""
    found: set[str] = set()
    for pointer, found_here in named:
        value = found_here.get(key)
        if value not in (None, "") and value not in mine and (
                old is None or annotations_at(old, pointer).get(key) != value):
            found.add(str(value))
    return sorted(found)


#: Kueue's WorkloadPriorityClass label: it ranks (and lets preempt) a workload as a priority
#: class does, so its value is held to the same `priority_classes` of the role.
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


def _priority_classes(plan: Plan, workload: Workload) -> set[str]:
    """The priority classes a GPU workload's pods run at (every template's: Kueue ranks a
    RayCluster by its head, an MPIJob by its launcher), a Kubeflow job's
    `runPolicy.schedulingPolicy.priorityClass` (its PodGroup's and Kueue's), and Kueue's
    priority-class labels on the object and its templates."""
    found: set[str] = set()
    obj = plan.request.obj
    spec = obj.get("spec") if is_object(obj) else None
    if is_object(spec):
        if isinstance(spec.get("priorityClassName"), str):
            found.add(spec["priorityClassName"])
        run = spec.get("runPolicy")
        scheduling = run.get("schedulingPolicy") if is_object(run) else None
        if is_object(scheduling) and isinstance(scheduling.get("priorityClass"), str):
            found.add(scheduling["priorityClass"])
    _kueue_priority(obj, found)
    for ps in workload.pod_sets:
        if ps.template_path is None:
            continue
        node = plan.node(ps.template_path)
        pod_spec = node.get("spec") if is_object(node) else None
        value = pod_spec.get("priorityClassName") if is_object(pod_spec) else None
        found.add(value if isinstance(value, str) else "")
        _kueue_priority(node, found)
    return found


def _kueue_priority(node: Any, found: set[str]) -> None:
    meta = node.get("metadata") if is_object(node) else None
    labels = meta.get("labels") if is_object(meta) else None
    value = labels.get(KUEUE_PRIORITY_LABEL) if is_object(labels) else None
    if isinstance(value, str):
        found.add(value)


def _exception(policy: Policy, plan: Plan, lead: str, *, owner: Identity | None = None, gpus: int = 0) -> str:
    """`lead`, then how to ask for an exception and who may approve one (admission/approvals.py); ""
    (the rule's own hint) when nobody may. `owner` is the workload's for a change to it."""
    ask = ask_approval(policy, plan, owner=owner.user if owner else None, team=owner.default_team if owner else "",
                       gpus=gpus)
    return f"{lead}{ask}" if ask else ""


def _size_checks(plan: Plan, policy: Policy, workload: Workload, violations: list[Violation],
                 owner: Identity | None = None, admitted: frozenset[str] | None = None) -> None:
    """Priority class and per-workload limit of the requester's role, or of `owner`'s when the
    request is made for someone else (an actor's child, a change to another person's workload).
    `admitted`: see `_priority_check`."""
    ident = owner or plan.identity
    _priority_check(plan, policy, workload, violations, ident, admitted)
    cap = policy.role_limits(ident.role).max_gpus_per_workload
    if cap is not None and workload.gpus > cap:
        verb = "launch" if plan.action is Action.LAUNCH and owner is None else "run"
        violations.append(violation(policy, "workload-gpu-limit",
            f"{ident.describe()} may {verb} at most {cap} GPUs per workload; this one asks for "
            f"{workload.gpus} ({workload.describe_gpus()})",
            _exception(policy, plan, "Ask for an exception ", owner=owner, gpus=workload.gpus)))


def _grace_checks(plan: Plan, policy: Policy, workload: Workload, violations: list[Violation]) -> None:
    """A deleted pod keeps running for its grace period, and a forced delete frees its record at
    once: a GPU pod's `terminationGracePeriodSeconds` may not pass limits.yaml
    `max_gpu_termination_grace_seconds`, so that what runs on GPUs after its charge is bounded."""
    cap = policy.max_gpu_termination_grace_s
    if cap is None:
        return
    for ps in workload.pod_sets:
        if ps.template_path is None or not ps.gpus_each:
            continue
        node = plan.node(ps.template_path)
        spec = node.get("spec") if is_object(node) else None
        grace = spec.get("terminationGracePeriodSeconds") if is_object(spec) else None
        if isinstance(grace, int) and not isinstance(grace, bool) and grace > cap:
            where = f" (pod template {ps.template_path.lstrip('/').replace('/', '.')})" if ps.template_path else ""
            violations.append(violation(policy, "grace-period",
                f"a GPU pod of {plan.display_kind} {plan.display_ref} sets terminationGracePeriodSeconds "
                f"{grace}{where}; GPU pods may run on at most {cap} s after they are deleted",
                hint=f"Set terminationGracePeriodSeconds to {cap} or less."))
            return


def _new_unresolved(plan: Plan, policy: Policy) -> tuple[str, ...]:
    """Why GPUs of the new object cannot be counted, less what already held for the old one
    (an UPDATE that leaves an uncountable part as it was grows nothing uncounted)."""
    workload, req = plan.workload, plan.request
    if workload is None or not workload.unresolved:
        return ()
    if plan.action is not Action.MODIFY or req.old_obj is None:
        return workload.unresolved
    try:
        old = read_workload(req.old_obj, req.kind.group, req.kind.kind, policy.gpu, kinds=policy.kinds).unresolved
    except WorkloadError:
        old = ()
    return tuple(r for r in workload.unresolved if r not in old)


def _unresolved_checks(plan: Plan, policy: Policy, violations: list[Violation], target: Target | None = None) -> None:
    """A workload whose GPUs cannot all be counted (limits.yaml `workload_kinds`, admission/kinds.py)
    is denied where a GPU cap applies, to the requester or (a modify) to the owner of `target`,
    since no cap can be checked against it; roles without caps (admins by default) may launch
    it, audited with the reason."""
    reasons = _new_unresolved(plan, policy)
    if not reasons:
        return
    ident = plan.identity
    who = [(ident.describe(), plan.owner or ident.user, ident.role, plan.team)]
    if target is not None:
        who.append((f"its owner {target.owner} (role {target.role or 'none'})", target.owner, target.role or None,
                    target.team))
    capped = [name for name, user, role, team in who if any(cap is not None for cap in (
        policy.role_limits(role).max_gpus_per_workload, policy.user_cap(user, role), policy.team_cap(team)))]
    if capped:
        violations.append(violation(policy, "unresolved-gpus",
            f"{capped[0]} has GPU caps, so the gateway must count every GPU, and {plan.display_kind} "
            f"{plan.display_ref} {'; and it '.join(reasons)}"))


def _priority_check(plan: Plan, policy: Policy, workload: Workload, violations: list[Violation],
                    ident: Identity, admitted: frozenset[str] | None = None) -> None:
    """The priority classes of the workload's pods must be ones `ident`'s role may use. A
    controller's GPU object is checked against its root owner's role and may also carry the
    classes the root was `admitted` with (an approved exception let the root's templates carry
    them, and the controller copies them); None when the root's record keeps none."""
    allowed = policy.role_limits(ident.role).priority_classes
    if allowed is None:
        return
    bad = sorted(_priority_classes(plan, workload) - allowed - (admitted or frozenset()))
    if not bad:
        return
    names = ", ".join(repr(c) if c else "(none)" for c in sorted(allowed)) or "none"
    if plan.identity.is_actor:
        root = f", nor was the workload it belongs to admitted with {'it' if len(bad) == 1 else 'them'}"
        violations.append(violation(policy, "priority-class",
            f"controller {plan.identity.user} makes {plan.display_kind} {plan.display_ref} for {ident.user}: "
            f"{ident.describe()} may not use priority class {', '.join(c or '(none)' for c in bad)} "
            f"(allowed: {names}){root}",
            hint=f"Its priority class comes from the workload it belongs to: give that workload a class "
                 f"{ident.user}'s role may use, or have {ident.user} ask for an exception for it "
                 f"(gpuctl request modify KIND NAMESPACE/NAME --gpus N --reason ...)."))
        return
    owner = None if ident == plan.identity else ident
    violations.append(violation(policy, "priority-class",
        f"{ident.describe()} may not use priority class {', '.join(bad)} (allowed: {names})",
        _exception(policy, plan, "Use a priority class the role may use, or ask for an exception ",
                   owner=owner, gpus=workload.gpus)))


def _quota_checks(
    policy: Policy, facts: Facts, *, asked: int, owner: str, owner_role: str | None, team: str,
    violations: list[Violation],
) -> None:
    violations.extend(quota_violations(policy, facts.usage, asked=asked, owner=owner, owner_role=owner_role,
                                       team=team))


def quota_violations(policy: Policy, usage: Usage, *, asked: int, owner: str, owner_role: str | None,
                     team: str) -> list[Violation]:
    """The owner's and the team's concurrent caps that `asked` more GPUs would break, over `usage`."""
    found = []
    for b in check_caps(asked, usage, user_cap=policy.user_cap(owner, owner_role), team_cap=policy.team_cap(team)):
        who = f"user {owner} (role {owner_role or 'none'})" if b.scope == "user" else f"team {team}"
        found.append(violation(policy, f"{b.scope}-quota",
            f"{who} may hold at most {b.cap} GPUs at once; {b.used} are in use and this asks for {b.asked} more"))
    return found


def caps_checked(plan: Plan, policy: Policy, facts: Facts, decision: Decision, *,
                 usage_known: bool = True) -> tuple[CapFigure, ...]:
    """The GPU caps `decide` held this request to, with the figures it compared: the owner's
    role's per-workload limit, the owner's concurrent cap and their team's, each with the GPUs
    in use (`facts.usage`, None where not `usage_known`) and asked. Empty where none applies
    (kill, exec, requests decided without the ledger, controllers' objects, a change that adds
    no GPUs, a person without a role)."""
    workload, ident, target = plan.workload, plan.identity, facts.target
    if plan.early is not None or plan.data_kind or workload is None or ident.is_actor:
        return ()
    if plan.action is Action.LAUNCH or (plan.action is Action.MODIFY and target is None
                                        and not plan.old_gpu_capable):
        owner, role, team = plan.owner, ident.role, plan.team
        charged = not charges_children_of(plan.request, workload)
    elif plan.action is Action.MODIFY and target is not None and target.owner and target.is_root \
            and decision.gpus > target.gpus:
        owner, role, team, charged = target.owner, target.role or None, target.team, target.charged
    else:
        return ()
    if role is None:
        return ()
    asked = decision.gpus
    found = [CapFigure("workload-gpu-limit", f"role {role}", policy.role_limits(role).max_gpus_per_workload,
                       None, asked)]
    if charged:  # a CronJob's GPUs are charged per Job it makes, each against the caps then
        found.append(CapFigure("user-quota", f"user {owner} (role {role})", policy.user_cap(owner, role),
                               facts.usage.user if usage_known else None, asked))
        if team:
            found.append(CapFigure("team-quota", f"team {team}", policy.team_cap(team),
                                   facts.usage.team if usage_known else None, asked))
    return tuple(found)


def _launch(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    req, ident, workload = plan.request, plan.identity, plan.workload
    assert workload is not None
    if ident.is_actor and req.operation == "CREATE":
        return _shaped(_actor_create(plan, policy, facts), plan, workload)
    if facts.target is not None and (facts.target.owner != ident.user or _other_object(plan, facts.target)):
        # The ledger holds this name for someone else, or for another object: it exists (the
        # API server will refuse the create) or its deletion was never seen. Never hand the
        # record over, nor replace it (a second `kubectl create` must not wipe a charge).
        team = f" (team {facts.target.team})" if facts.target.team else ""
        return conclude(plan, [violation(policy, "ownership",
            f"the gateway's ledger holds {plan.display_kind} {plan.display_ref} for "
            f"{facts.target.owner or 'nobody recorded'}{team}; it may still exist")],
            allow_rule="ownership", allow_reason="", gpus=workload.gpus)
    if not workload.gpu_capable and not workload.unresolved:
        decided = _without_gpus(plan, policy, facts)
        if decided.allowed and (req.kind.group, req.kind.kind) in TEMPLATES_ELSEWHERE:
            # Recorded at 0 GPUs, so that what its controller makes is held to that.
            return replace(decided, reserve=Reservation(plan.owner, plan.team, ident.role or "", 0, True,
                                                        shape_of(req, workload), uid=plan.uid, root_uid=plan.uid))
        return decided
    violations: list[Violation] = []
    if ident.role is None or not policy.may(ident.role, "launch", "own"):
        violations.append(violation(policy, "no-role",
            f"{ident.describe()} may not launch GPU workloads; this one asks for "
            f"{workload.gpus} ({workload.describe_gpus()})"))
    _stamp_checks(plan, policy, workload, violations)
    _size_checks(plan, policy, workload, violations)
    _grace_checks(plan, policy, workload, violations)
    _unresolved_checks(plan, policy, violations)
    access_checks(plan, policy, facts, violations)
    hatch_checks(plan, policy, violations)
    _mechanics_checks(plan, policy, facts, violations)
    per_child = charges_children_of(req, workload)
    if not per_child:  # a CronJob runs nothing itself: each Job it makes is charged when made
        _quota_checks(policy, facts, asked=workload.gpus, owner=plan.owner, owner_role=ident.role,
                      team=plan.team, violations=violations)
    violations.extend(violation(policy, "gpu-hour-budget", f"the GPU-hour budget of {spent} is spent for this period")
                      for spent in facts.spent_budgets)
    _second_person(plan, policy, workload.gpus, "", violations)
    denied = denial(plan, violations, gpus=workload.gpus, owner=plan.owner, team=plan.team)
    queueing = policy.scheduling.queueing and not per_child  # queue mode: wait behind the gate (admission/gates.py)
    if denied is not None and not facts.approvals and not queueing:
        return denied  # nothing lifts it: no reservation to build
    # The ledger may keep this reservation (an admit, an approval, a wait in the queue): its shape too.
    classes = _priority_classes(plan, workload)
    reserve = Reservation(plan.owner, plan.team, ident.role or "", workload.gpus, not per_child,
                          shape_of(req, workload, classes), uid=plan.uid, root_uid=plan.uid,
                          refs=referenced_names(plan))
    if denied is not None:
        decided = overruled(plan, denied, facts.approvals, reserve=reserve)
    else:
        decided = admit(
            plan, violations, rule="role-limits",
            reason=f"{ident.describe()} may launch {workload.gpus} GPUs ({workload.describe_gpus()})",
            gpus=workload.gpus, reserve=reserve, owner=plan.owner, team=plan.team,
        )
    if queueing:
        decided = queued(plan, policy, decided, reserve, classes) or decided
    return decided


def _shaped(decision: Decision, plan: Plan, workload: Workload) -> Decision:
    """The decision (just built by `_actor_create`, so it is changed in place) with its
    reservation's shape, built only where the ledger will keep it: a controller's pods come in
    bursts of thousands, so the generic `dataclasses.replace` is not used here. A child charged
    on its own (a CronJob's Job, its classes checked against its owner's role) keeps its
    priority classes, which its pods may carry."""
    r = decision.reserve
    if decision.allowed and r is not None:
        classes = _priority_classes(plan, workload) if r.charged else None
        decision.reserve = Reservation(r.owner, r.team, r.role, r.gpus, r.charged,
                                       shape_of(plan.request, workload, classes), r.uid, r.root_uid, r.refs)
    return decision


def _other_object(plan: Plan, target: Target) -> bool:
    """Whether the ledger's record of this name is of another object than the one created."""
    return bool(target.uid and plan.uid and target.uid != plan.uid)


def _owner_identity(target: Target) -> Identity:
    """The owner of a ledger record as the checks made on their behalf see them."""
    return Identity(user=target.owner, groups=(), role=target.role or None,
                    teams=(target.team,) if target.team else ())


def _actor_create(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    """A controller's, operator's or node's GPU object: it belongs to the owner of the record its
    controller ownerReference points to, and is checked against that owner's role (admission/actors.py)."""
    req, ident, workload = plan.request, plan.identity, plan.workload
    assert workload is not None
    spec = policy.actors.find(ident.user)
    kind = kind_name(req.kind.group, req.kind.kind)
    violations: list[Violation] = []
    if spec is None or not spec.may_create(req.kind.group, req.kind.kind):
        listed = ", ".join(sorted(spec.creates)) if spec is not None and spec.creates else "none"
        violations.append(violation(policy, "actor-scope",
            f"controller {ident.user} may not create {kind} objects with GPUs (it may create: {listed})"))
    elif plan.parent is None:
        violations.append(violation(policy, "actor-scope",
            f"controller {ident.user} creates {plan.display_kind} {plan.display_ref} with "
            f"{workload.gpus} GPUs but no controller ownerReference; a controller's GPU objects must "
            f"belong to a workload it controls"))
    elif facts.target is not None and (_other_object(plan, facts.target) or (not facts.target.uid and (
            facts.parent is None or facts.target.owner != facts.parent.owner))):
        violations.append(violation(policy, "ownership",
            f"the gateway's ledger holds {plan.display_kind} {plan.display_ref} for "
            f"{facts.target.owner or 'nobody recorded'}; it may still exist"))
    if violations:
        return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=workload.gpus)
    assert plan.parent is not None
    parent, root = facts.parent, facts.root or facts.parent
    # A pod's record holds its own GPUs: a shared DRA claim's are held once, by the root.
    own = workload.gpus - sum(ps.gpus for ps in workload.pod_sets if ps.shared)
    if parent is not None and root is not None and not parent.owner:
        # Unowned (it predates the gateway): still held to what its root is recorded for.
        _allowance(plan, workload.gpus, workload, root, violations, policy)
        if not violations and is_pod_create(plan) and workload.gpus:
            _siblings(plan, workload, root, facts.pods_under_root, violations, policy)
        if violations:
            return conclude(plan, violations, allow_rule="unowned-workload", allow_reason="", gpus=workload.gpus)
        return Decision(
            allowed=True, rule="unowned-workload", action=plan.action, gpus=workload.gpus, audited=True,
            reason=f"created by controller {ident.user} for {plan.parent.describe()}, which has no recorded owner",
            reserve=Reservation("", "", "", own if is_pod_create(plan) else workload.gpus, False, uid=plan.uid,
                                root_uid=root.uid or parent.uid),
        )
    if parent is None and facts.parent_gone and workload.gpus:
        return conclude(plan, [violation(policy, "root-allowance",
            f"{plan.parent.describe()} was a workload the ledger recorded, and it was deleted; nothing made "
            f"for it may hold GPUs")], allow_rule="actor", allow_reason="", gpus=workload.gpus)
    if parent is not None and facts.root is None and not parent.is_root and workload.gpus:
        return conclude(plan, [violation(policy, "root-allowance",
            f"{plan.parent.describe()} was made from a workload the ledger no longer holds (it was deleted); "
            f"nothing it makes may hold GPUs")], allow_rule="actor", allow_reason="", gpus=workload.gpus)
    if parent is None or root is None:
        # Made for an object the ledger does not know (created before the gateway, or while it
        # was unreachable): admitted and recorded as unowned, so that it is visible and decided
        # under `unowned_workloads`; an administrator may assign an owner later.
        return Decision(
            allowed=True, rule="unowned-workload", action=plan.action, gpus=workload.gpus, audited=True,
            reason=f"created by controller {ident.user} for {plan.parent.describe()}, which the gateway's "
                   f"ledger does not know; recorded without an owner",
            reserve=Reservation("", "", "", workload.gpus, False, uid=plan.uid, root_uid=plan.uid),
        )
    owner = _owner_identity(parent)
    for_whom = f"for {parent.owner or 'nobody recorded'}'s {plan.parent.describe()}"
    hatch_checks(plan, policy, violations, identity=owner)
    access_checks(plan, policy, facts, violations, identity=owner)
    if charges_children(parent.shape):
        # A CronJob's Job: a charge of its own on the CronJob's owner, within their caps.
        _size_checks(plan, policy, workload, violations, owner=owner, admitted=admitted_classes(parent.shape))
        _quota_checks(policy, facts, asked=workload.gpus, owner=parent.owner, owner_role=parent.role,
                      team=parent.team, violations=violations)
        reserve = Reservation(parent.owner, parent.team, parent.role, workload.gpus, True,
                              uid=plan.uid, root_uid=plan.uid)
        return conclude(plan, violations, allow_rule="actor", gpus=workload.gpus, reserve=reserve,
                        allow_reason=f"controller {ident.user} creates {workload.gpus} GPUs {for_whom}, "
                                     f"charged to {parent.owner}",
                        owner=parent.owner, team=parent.team)
    _priority_check(plan, policy, workload, violations, _owner_identity(root), admitted_classes(root.shape))
    _allowance(plan, workload.gpus, workload, root, violations, policy)
    if not violations and is_pod_create(plan) and workload.gpus:
        _siblings(plan, workload, root, facts.pods_under_root, violations, policy)
    if root.waiting and is_pod_create(plan) and workload.gpus and not carries_gate(req.obj):
        violations.append(Violation(GATE_RULE, Mode.ENFORCE,
            "the workload it belongs to waits in the GPU queue, so its GPU pods must carry the "
            "gpu-gateway.io/quota scheduling gate"))
    reserve = Reservation(parent.owner, parent.team, parent.role, own if is_pod_create(plan) else workload.gpus,
                          False, uid=plan.uid, root_uid=root.uid or parent.uid)
    if violations:
        return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=workload.gpus,
                        reserve=reserve, owner=parent.owner, team=parent.team)
    return Decision(allowed=True, rule="actor", action=plan.action, gpus=workload.gpus,
                    reason=f"created by controller {ident.user} {for_whom}", reserve=reserve,
                    owner=parent.owner, team=parent.team)


def _allowance(plan: Plan, gpus: int, workload: Workload | None, root: Target, violations: list[Violation],
               policy: Policy) -> None:
    """An object controllers made must fit what its root workload is charged for: no more GPUs in
    all, and no pod with more GPUs than the root's largest."""
    each = max((ps.gpus_each for ps in workload.pod_sets), default=0) if workload is not None else 0
    cap_each = max_gpus_per_pod(root.shape)
    what_root = f"the workload it belongs to ({root.owner or 'unowned'}'s)"
    if gpus > root.gpus:
        violations.append(violation(policy, "root-allowance",
            f"{plan.display_kind} {plan.display_ref} would hold {gpus} GPUs; {what_root} is charged for "
            f"{root.gpus}"))
    elif each > cap_each:
        violations.append(violation(policy, "root-allowance",
            f"a pod of {plan.display_kind} {plan.display_ref} would ask for {each} GPUs; {what_root} "
            f"allows at most {cap_each} per pod"))


def _siblings(plan: Plan, workload: Workload, root: Target, held: int, violations: list[Violation],
              policy: Policy) -> None:
    """A controller's pod and the other pods recorded under its root (terminating ones too)
    must fit what the root is charged for together. The pods' records hold their own GPUs, and
    this pod's shared DRA claims count once, with it."""
    if held + workload.gpus > root.gpus:
        violations.append(violation(policy, "root-allowance",
            f"the pods of the workload {plan.display_ref} belongs to ({root.owner or 'unowned'}'s) already hold "
            f"{held} of the {root.gpus} GPUs it is charged for; this pod asks for {workload.gpus} more",
            hint="Pods that are still terminating hold their GPUs until they are gone; the controller "
                 "retries once they are."))


def _second_person(plan: Plan, policy: Policy, gpus: int, owner: str, violations: list[Violation],
                   team: str = "") -> None:
    """Requests that need another person's approval whoever asks (limits.yaml `second_person`).

    `owner` (and `team`) is the target's owner for a kill or modify, "" for a launch.
    """
    rules, ident = policy.second_person, plan.identity
    lead = "This needs a second person's approval "
    if not owner:
        limit = rules.launch_over_gpus
        if limit is not None and gpus > limit:
            violations.append(violation(policy, "second-person",
                f"launching more than {limit} GPUs needs a second person's approval; this asks for {gpus}",
                _exception(policy, plan, lead, gpus=gpus)))
        return
    limit = rules.touch_others_over_gpus
    if limit is not None and owner != ident.user and gpus > limit:
        assert plan.action is not None
        target = Identity(owner, (), None, (team,) if team else ())
        violations.append(violation(policy, "second-person",
            f"{plan.action.value} of another person's workload of more than {limit} GPUs needs a second "
            f"person's approval; {plan.display_ref} belongs to {owner} and holds {gpus}",
            _exception(policy, plan, lead, owner=target, gpus=gpus)))


def _without_gpus(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    """A workload that asks for no GPUs is decided only on the data its pods reach and the
    escape hatches they use; it is audited only when a rule objects."""
    violations: list[Violation] = []
    if plan.workload is not None and not plan.identity.is_actor:
        _stamp_checks(plan, policy, plan.workload, violations,
                      old=plan.request.old_obj if plan.request.operation == "UPDATE" else None)
    access_checks(plan, policy, facts, violations)
    _mechanics_checks(plan, policy, facts, violations)
    hatch_checks(plan, policy, violations)
    if not violations:
        return Decision(allowed=True, rule="data-access", action=plan.action,
                        reason="asks for no GPUs; every referenced object is reachable")
    return conclude(plan, violations, allow_rule="data-access", gpus=0,
                    allow_reason="asks for no GPUs; every referenced object is reachable")


def _mechanics_checks(plan: Plan, policy: Policy, facts: Facts, violations: list[Violation]) -> None:
    """A person's object may not make a controller act on what they may not act on themselves
    (admission/mechanics.py): each object it reaches is decided as the action that amounts to."""
    ident = plan.identity
    for reach in plan.reaches:
        target = facts.by_uid.get(reach.uid) if reach.uid else facts.references.get(reach.key) if reach.key else None
        if target is None:
            continue
        rel = relation(ident, target.owner, target.team)
        if rel == "own" or policy.may(ident.role, reach.action, rel) or (
                not target.owner and ident.role in policy.unowned_roles):
            continue
        team = f" (team {target.team})" if target.team else ""
        violations.append(violation(policy, "ownership",
            f"{plan.display_kind} {plan.display_ref} {reach.what}, which belongs to "
            f"{target.owner or 'nobody recorded'}{team}; {ident.describe()} may not {reach.action} it"))
    admin = policy.may(ident.role, "reassign", "any")
    if plan.set_labels and not admin:
        labels = ", ".join(plan.set_labels)
        violations.append(violation(policy, "ownership",
            f"{plan.display_kind} {plan.display_ref} sets {labels}: labels the controllers set on the pods "
            f"they make and select them by",
            hint="Remove them; a controller adopts (and may delete) pods that carry them."))
    if plan.controlled_change and not admin:
        violations.append(violation(policy, "ownership",
            f"this change {plan.controlled_change} of a pod its controller manages: the controller would "
            f"release it and start another",
            hint="Change the workload that made the pod instead."))


def _new_gpus(plan: Plan, target: Target | None) -> tuple[int, str | None] | None:
    """GPUs after the change with the scaled shape (for a `/scale`), or None when a scale
    cannot be computed from the record."""
    if plan.request.sub_resource != "scale":
        return (plan.workload.gpus if plan.workload else 0), None
    if target is None or plan.replicas is None:
        return None
    return scaled(target.shape, plan.replicas, target.gpus, plan.old_replicas)


def _ownership(plan: Plan, policy: Policy, target: Target, verb: str, violations: list[Violation],
               gpus: int | None = None) -> None:
    """`verb` on `target` at the requester's relation to it; `gpus`: what a modify leaves it with."""
    ident = plan.identity
    rel = relation(ident, target.owner, target.team)
    if policy.may(ident.role, verb, rel):
        return
    widest = policy.widest_scope(ident.role, verb)
    can = f"may {verb} only {_SCOPE_PHRASE[widest]}" if widest else f"may not {verb} GPU workloads"
    team = f" (team {target.team})" if target.team else ""
    ask = f"Ask {target.owner}, or ask for an exception " if target.owner else "Ask for an exception "
    violations.append(violation(policy, "ownership",
        f"{ident.describe()} {can}; {plan.display_kind} {plan.display_ref} belongs to "
        f"{target.owner or 'nobody recorded'}{team}",
        _exception(policy, plan, ask, owner=_owner_identity(target), gpus=target.gpus if gpus is None else gpus)))


def _unowned(plan: Plan, policy: Policy, gpus: int, violations: list[Violation]) -> None:
    ident = plan.identity
    if ident.role not in policy.unowned_roles:
        violations.append(violation(policy, "unowned-workload",
            f"{ident.describe()} may not {plan.action.value if plan.action else 'change'} a GPU "
            f"workload ({gpus} GPUs) that has no recorded owner",
            _exception(policy, plan, "This workload predates the gateway's records; ask for an exception ",
                       owner=Identity("", (), None, ()), gpus=gpus)))


def _modify(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    req, ident, target = plan.request, plan.identity, facts.target
    after = _new_gpus(plan, target)
    if after is None:
        if target is None:
            # Every GPU workload is in the ledger from its create on (at any size), and those
            # that predate the gateway from the controller's listing on (scheduling/roots.py),
            # so a scale of one it does not know is of a workload without GPU templates, once
            # that listing is done.
            if not facts.roots_listed:
                return conclude(plan, [violation(policy, "unowned-workload",
                    f"the gateway does not know {plan.display_kind} {plan.display_ref}, and has not yet listed the "
                    f"workloads that predate it; retry in a moment",
                    hint="The gateway's controller records the workloads created before the gateway when it "
                         "starts; a scale of one it does not know waits until it has.")],
                    allow_rule="unowned-workload", gpus=0,
                    allow_reason="scale of a workload the gateway did not admit, before it listed those that "
                                 "predate it")
            return _pass(Action.MODIFY, "scale of a workload the gateway did not admit")
        return _unreadable(plan, "cannot compute the GPUs after this scale")
    new_gpus, scaled_shape = after
    if target is None:
        capable = plan.old_gpu_capable or (plan.workload is not None and plan.workload.gpu_capable)
        if not plan.old_gpu_capable and not capable and not _new_unresolved(plan, policy):
            if ident.is_actor or not (plan.reaches_anything or reaches(plan, policy) or (
                    plan.workload is not None and _names_an_owner(req.obj, plan.workload))):
                return _pass(Action.MODIFY, "asks for no GPUs")
            return _without_gpus(plan, policy, facts)
        if not plan.old_gpu_capable:
            # A workload that starts asking for GPUs is a launch by whoever makes it do so.
            return _launch(plan, policy, facts)
        return _unowned_change(plan, policy, facts, max(plan.old_gpus, new_gpus))
    old_gpus = target.gpus
    violations: list[Violation] = []
    if req.sub_resource != "scale" and _finally_deleted(plan):
        if not ident.is_actor:
            _ownership(plan, policy, target, "modify", violations)
        return _held_on(plan, policy, conclude(
            plan, violations, allow_rule="actor" if ident.is_actor else "ownership", gpus=old_gpus,
            allow_reason=f"the last finalizer of {plan.display_kind} {plan.display_ref} is removed: it is gone",
            release=True, owner=target.owner, team=target.team), pod=req.obj)
    owner, team = target.owner, target.team
    if ident.is_actor and plan.parent is not None and facts.parent is not None \
            and facts.parent.owner != target.owner:
        violations.append(violation(policy, "ownership",
            f"controller {ident.user} would adopt {plan.display_kind} {plan.display_ref}, which belongs to "
            f"{target.owner or 'nobody recorded'}, into {plan.parent.describe()} of "
            f"{facts.parent.owner or 'nobody recorded'}; it matched that controller's selector"))
    if not ident.is_actor:
        _ownership(plan, policy, target, "modify", violations, gpus=new_gpus)
        _second_person(plan, policy, max(old_gpus, new_gpus), target.owner or "?", violations, target.team)
        if plan.workload is not None and req.sub_resource != "scale":
            owner, team = _reassignment(plan, policy, target, violations)
            access_checks(plan, policy, facts, violations)
            hatch_checks(plan, policy, violations)
            _mechanics_checks(plan, policy, facts, violations)
            _grace_checks(plan, policy, plan.workload, violations)
    if plan.workload is not None and req.sub_resource != "scale":
        _unresolved_checks(plan, policy, violations, target)
        if not ident.is_actor:
            _template_integrity(plan, policy, owner, team, violations)
            label_checks(plan, policy, owner, team, stamped_paths(req.obj, plan.workload, plan.templates), violations)
            if target.owner and new_gpus <= old_gpus:  # growth checks it with the size
                _priority_check(plan, policy, plan.workload, violations, _owner_identity(target))
    role = _recorded_role(plan, policy, target, owner)
    if owner != target.owner and new_gpus > old_gpus:
        violations.append(violation(policy, "owner-annotation",
            f"a reassignment moves {plan.display_kind} {plan.display_ref} as it is; grow it in a "
            f"change of its own, decided against {owner}'s caps"))
    elif new_gpus > old_gpus:
        _growth(plan, policy, facts, target if role == target.role else replace(target, role=role), new_gpus,
                violations)
    # A scale keeps the recorded pod sets (their GPUs per pod do not change), at the new count. The
    # priority classes are the new ones where they were checked against the owner's role (a
    # person's change), else those recorded: a controller's edit cannot widen what its pods may carry.
    if plan.workload is not None:
        checked = not ident.is_actor and bool(target.owner)
        classes = _priority_classes(plan, plan.workload) if checked else admitted_classes(target.shape)
        shape = shape_of(req, plan.workload, classes)
    else:
        shape = scaled_shape or target.shape
    reserve = Reservation(owner, team, role, new_gpus, target.charged, shape,
                          uid=target.uid or plan.uid, root_uid=target.root_uid or target.uid or plan.uid,
                          refs=referenced_names(plan) if plan.workload is not None and req.sub_resource != "scale"
                          else None)
    if ident.is_actor and not violations:
        changed = new_gpus != old_gpus
        return Decision(allowed=True, rule="actor", action=Action.MODIFY, gpus=new_gpus, audited=changed,
                        reason=f"controller {ident.user} changes {owner or 'unowned'}'s {plan.display_kind} "
                               f"{plan.display_ref} ({old_gpus} → {new_gpus} GPUs)",
                        reserve=reserve, owner=owner, team=team)
    return conclude(
        plan, violations, allow_rule="actor" if ident.is_actor else "ownership",
        allow_reason=f"{ident.describe()} may modify {target.owner or 'unowned'}'s workload "
                     f"({old_gpus} → {new_gpus} GPUs)",
        gpus=new_gpus, reserve=reserve, owner=owner, team=team, approvals=facts.approvals,
    )


def _recorded_role(plan: Plan, policy: Policy, target: Target, owner: str) -> str:
    """The role a workload's record holds its owner to after this change: the owner's own role
    when they make the change themselves (not one a break-glass grant lends them), the new
    owner's when it is handed to someone else (`Policy.assigned_role`: their groups are not in
    the request), else the recorded one. Never the empty role of an unowned record (no caps)."""
    ident = plan.identity
    if ident.is_actor:
        return target.role
    if owner == ident.user and ident.role and not ident.grant:
        return ident.role
    if owner != target.owner:
        return policy.assigned_role(owner)
    return target.role


def _growth(plan: Plan, policy: Policy, facts: Facts, target: Target, new_gpus: int,
            violations: list[Violation]) -> None:
    """More GPUs for a recorded workload, whoever asks: a root is checked against its owner's
    role and caps, an object controllers made against what its root is charged for."""
    if not target.is_root:
        root = facts.root
        if root is None:
            violations.append(violation(policy, "root-allowance",
                f"{plan.display_kind} {plan.display_ref} was made from a workload the ledger no longer holds"))
        else:
            _allowance(plan, new_gpus, plan.workload, root, violations, policy)
        return
    if not target.owner:
        # Nobody is charged for it: only the roles `unowned_workloads` names may grow it (audited),
        # never a controller or an autoscaler on its own.
        if plan.identity.is_actor:
            violations.append(violation(policy, "unowned-workload",
                f"controller {plan.identity.user} may not grow {plan.display_kind} {plan.display_ref}, which has "
                f"no recorded owner, to {new_gpus} GPUs; an administrator may assign it an owner first"))
        else:
            _unowned(plan, policy, new_gpus, violations)
        return
    owner = _owner_identity(target)
    if plan.workload is not None and plan.request.sub_resource != "scale":
        _size_checks(plan, policy, plan.workload, violations, owner=owner)
    else:
        cap = policy.role_limits(owner.role).max_gpus_per_workload
        if cap is not None and new_gpus > cap:
            violations.append(violation(policy, "workload-gpu-limit",
                f"{owner.describe()} may run at most {cap} GPUs per workload; this scale asks for "
                f"{new_gpus} ({plan.replicas} replicas"
                f"{', with the surge of a rolling update' if surges(target.shape) else ''})",
                _exception(policy, plan, "Ask for an exception ", owner=owner, gpus=new_gpus)))
    if target.charged:
        _quota_checks(policy, facts, asked=new_gpus, owner=target.owner, owner_role=target.role,
                      team=target.team, violations=violations)


def _reassignment(plan: Plan, policy: Policy, target: Target, violations: list[Violation]) -> tuple[str, str]:
    """The owner and team after an UPDATE: changed only by a role that may `reassign`."""
    ident, new_ann = plan.identity, annotations_at(plan.request.obj)
    # An annotation left out (`kubectl replace` of the submitted manifest) is no change.
    changed = any(new_ann.get(k) not in (None, _recorded(target, k)) for k in (OWNER_ANNOTATION, TEAM_ANNOTATION))
    if not changed:
        return target.owner, target.team
    if policy.may(ident.role, "reassign", relation(ident, target.owner, target.team)):
        return str(new_ann.get(OWNER_ANNOTATION) or target.owner), str(new_ann.get(TEAM_ANNOTATION) or target.team)
    violations.append(violation(policy, "owner-annotation",
        f"{ident.describe()} may not change the owner or team of a workload"))
    return target.owner, target.team


def _recorded(target: Target, annotation: str) -> str:
    return target.owner if annotation == OWNER_ANNOTATION else target.team


def _template_integrity(plan: Plan, policy: Policy, owner: str, team: str, violations: list[Violation]) -> None:
    """Every pod template of a recorded workload keeps saying what the ledger says (the mutating
    webhook stamps them again on UPDATE): no owner or team but the recorded ones, none removed,
    and the queue key kept, so that no edit makes its pods start unowned, ungated or uncharged."""
    workload, req = plan.workload, plan.request
    assert workload is not None
    for pointer in template_paths(workload):
        new, old = annotations_at(plan.node(pointer)), annotations_at(req.old_obj, pointer)
        where = pointer.lstrip("/").replace("/", ".")
        for key, recorded, rule in ((OWNER_ANNOTATION, owner, "owner-annotation"),
                                    (TEAM_ANNOTATION, team, "team-annotation"),
                                    (WORKLOAD_ANNOTATION, old.get(WORKLOAD_ANNOTATION), "owner-annotation")):
            value = new.get(key)
            if (value is None and old.get(key) is None) or not recorded or value == recorded:
                continue
            found = "removes it" if value is None else f"sets {value!r}"
            violations.append(violation(policy, rule,
                f"the pod template {where} must keep {key}: {recorded}; this change {found}"))
            return


def _unowned_change(plan: Plan, policy: Policy, facts: Facts, gpus: int) -> Decision:
    """A change to a GPU workload the ledger has no record of (it predates the gateway)."""
    ident = plan.identity
    if ident.is_actor:
        return Decision(allowed=True, rule="unowned-workload", action=plan.action, gpus=gpus, audited=True,
                        reason=f"controller {ident.user} changes a GPU workload with no recorded owner")
    violations: list[Violation] = []
    _unowned(plan, policy, gpus, violations)
    return conclude(plan, violations, allow_rule="unowned-workload", gpus=gpus,
                    allow_reason=f"{ident.describe()} may change workloads with no recorded owner",
                    approvals=facts.approvals)


def _gone_after(plan: Plan) -> bool:
    """Whether the object is gone once this DELETE is through, so its record may go: not after an
    eviction (a disruption budget may still refuse it, after admission), nor while finalizers
    hold the object (its controllers may go on; the record goes with the UPDATE that removes the
    last finalizer, or with the controller's reconcile)."""
    req = plan.request
    if req.sub_resource == "eviction":
        return False
    meta = req.old_obj.get("metadata") if req.old_obj is not None else None
    finalizers = meta.get("finalizers") if is_object(meta) else None
    if isinstance(finalizers, list) and any(f != "foregroundDeletion" for f in finalizers):
        return False
    return req.resource != "pods" or bool(req.resource_group) or not _terminates_gracefully(req.old_obj, req.options)


def _terminates_gracefully(pod: Any, options: Any) -> bool:
    """Whether a deleted pod keeps running for a grace period (and so keeps its GPUs): it is on a
    node, has not finished, and the grace period of this DELETE is not 0. Its record then goes
    with the final DELETE (the kubelet's, grace 0) or with the controller's reconcile."""
    if not is_object(pod):
        return False
    spec, status = pod.get("spec"), pod.get("status")
    if not is_object(spec) or not spec.get("nodeName"):
        return False  # never scheduled: the API server removes it at once
    if is_object(status) and status.get("phase") in ("Succeeded", "Failed"):
        return False
    grace = options.get("gracePeriodSeconds") if is_object(options) else None
    if grace is None:
        meta = pod.get("metadata")
        grace = meta.get("deletionGracePeriodSeconds") if is_object(meta) else None
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return not isinstance(grace, int) or isinstance(grace, bool) or grace > 0


def _orphans(plan: Plan) -> bool:
    """Whether a DELETE leaves the object's dependents running (`--cascade=orphan`)."""
    options = plan.request.options or {}
    return options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True


def _finally_deleted(plan: Plan) -> bool:
    """An UPDATE that removes the last finalizer of an object being deleted: the object goes now.
    Not a pod still in its grace period (`deletionGracePeriodSeconds` above 0): the API server
    keeps it, and its containers run, until the kubelet's final DELETE."""
    req = plan.request
    meta = req.obj.get("metadata") if req.obj is not None else None
    if not is_object(meta) or not meta.get("deletionTimestamp"):
        return False
    if req.resource == "pods" and not req.resource_group and _terminates_gracefully(req.obj, None):
        grace = meta.get("deletionGracePeriodSeconds")
        if not (isinstance(grace, int) and not isinstance(grace, bool) and grace <= 0):
            return False
    finalizers = meta.get("finalizers")
    return not finalizers


def _touch(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    """Kill and exec: who may touch a running workload or pod."""
    ident, target, action = plan.identity, facts.target, plan.action
    assert action is not None
    if target is None:
        if action is Action.EXEC or not plan.old_gpu_capable:
            return _pass(action, "not a GPU workload the gateway admitted")
        if ident.is_actor:
            return _pass(action, f"controller {ident.user}")
        violations: list[Violation] = []
        _unowned(plan, policy, plan.old_gpus, violations)
        return conclude(plan, violations, allow_rule="unowned-workload", gpus=plan.old_gpus,
                         allow_reason=f"{ident.describe()} may change workloads with no recorded owner",
                         approvals=facts.approvals)
    release = action is Action.KILL and _gone_after(plan)
    violations = []
    orphaning = action is Action.KILL and _orphans(plan) and plan.request.resource != "pods"
    if (orphaning and not charges_children(target.shape)
            and not policy.may(ident.role, "reassign", relation(ident, target.owner, target.team))):
        violations.append(violation(policy, "root-allowance",
            f"deleting {plan.display_kind} {plan.display_ref} with propagationPolicy Orphan would leave what "
            f"its controllers made running without its charge",
            hint="Delete it with the default propagation (kubectl delete without --cascade=orphan)."))
    if ident.is_actor:
        if violations:
            return conclude(plan, violations, allow_rule="actor", allow_reason="", gpus=target.gpus)
        return _held_on(plan, policy, Decision(
            allowed=True, rule="actor", action=action, gpus=target.gpus,
            reason=f"controller {ident.user} for {target.owner or 'nobody recorded'}", release=release,
            owner=target.owner, team=target.team))
    if not target.owner:
        _unowned(plan, policy, target.gpus, violations)
        return _held_on(plan, policy, conclude(
            plan, violations, allow_rule="unowned-workload", gpus=target.gpus, release=release,
            allow_reason=f"{ident.describe()} may change workloads with no recorded owner",
            approvals=facts.approvals))
    _ownership(plan, policy, target, action.value, violations)
    if action is Action.KILL:
        _second_person(plan, policy, target.gpus, target.owner or "?", violations, target.team)
    rel = relation(ident, target.owner, target.team)
    return _held_on(plan, policy, conclude(
        plan, violations, allow_rule="ownership", gpus=target.gpus, release=release,
        allow_reason=f"{ident.describe()} may {action.value} {_SCOPE_PHRASE[rel] if rel != 'any' else 'any workload'}",
        owner=target.owner, team=target.team, approvals=facts.approvals,
    ))


#: How long an evicted GPU pod's record is held when limits.yaml sets no
#: `max_gpu_termination_grace_seconds` (the Eviction does not carry the pod).
UNBOUNDED_GRACE_HOLD_S = 3600


def _held_on(plan: Plan, policy: Policy, decision: Decision, pod: Any = None) -> Decision:
    """An admitted delete of a pod whose containers may run on after its object is gone: the
    record is kept (`hold_s`) for as long as they may. `pod`: the pod as this request leaves it
    (default: the request's old object)."""
    req = plan.request
    if not decision.allowed or req.resource != "pods" or req.resource_group:
        return decision
    if req.sub_resource == "eviction":
        # An Eviction may ask for grace 0 (`deleteOptions`), and the API server then removes
        # the pod at once; the request does not carry the pod, so the bound limits.yaml sets
        # on every GPU pod's grace period is held (the record goes sooner with a final DELETE).
        bound = policy.max_gpu_termination_grace_s
        return replace(decision, hold_s=UNBOUNDED_GRACE_HOLD_S if bound is None else bound)
    if not decision.release:
        return decision
    hold = _runs_on_after_delete(plan, req.old_obj if pod is None else pod)
    return replace(decision, hold_s=hold) if hold else decision


def _runs_on_after_delete(plan: Plan, pod: Any) -> int:
    """Seconds a pod's containers may run after its object is gone at once: a force delete
    (grace 0) of a pod on a node that has not finished, or the removal of the last finalizer
    of one, leaves the kubelet to stop them with the pod's own grace period (nothing else shows
    they run). Not for the kubelet's own final DELETE of a pod on its node, sent once the
    containers have stopped."""
    req = plan.request
    if req.sub_resource or not is_object(pod):
        return 0
    spec, status = pod.get("spec"), pod.get("status")
    if not is_object(spec) or not isinstance(spec.get("nodeName"), str) or not spec["nodeName"]:
        return 0
    if is_object(status) and status.get("phase") in ("Succeeded", "Failed"):
        return 0
    ident = plan.identity
    if ident.user == f"system:node:{spec['nodeName']}" and "system:nodes" in ident.groups:
        return 0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not isinstance(grace, int) or isinstance(grace, bool):
        return 30
    return max(grace, 0)
