"""PersistentVolumeClaims, ConfigMaps, Secrets, ServiceAccounts and VolumeSnapshots as owned objects.

Stamped with their creator on CREATE like workloads; changed (UPDATE) and deleted only by
whom the `modify` and `kill` permissions allow, at the requester's scope; objects with no
recorded owner (created before the gateway) by the roles in `unowned_workloads.allow_roles`.

A new claim cloned or restored from another claim or a snapshot (`dataSource`,
`dataSourceRef`), and a snapshot of a claim, read that claim or snapshot: decided as a
read-only mount. A name an admitted workload of someone else references but that does not
exist yet may not be created by another person (their object would be read by its pods).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.admission.access import access_checks
from gateway.admission.decision import Action, Decision, Reservation, Violation
from gateway.admission.labels import label_checks
from gateway.admission.plan import Facts, Plan, Target
from gateway.admission.podspec import PVC, SNAPSHOT, SNAPSHOT_GROUP, Reference, clone_sources
from gateway.admission.pointer import annotations_at, is_object, resolve
from gateway.admission.policy import OWNER_ANNOTATION, SHAREABLE_ANNOTATION, TEAM_ANNOTATION, Policy, relation
from gateway.admission.verdict import conclude, violation

DATA_KINDS = {("", "PersistentVolumeClaim"): "persistentvolumeclaims", ("", "ConfigMap"): "configmaps",
              ("", "Secret"): "secrets", ("", "ServiceAccount"): "serviceaccounts",
              (SNAPSHOT_GROUP, SNAPSHOT): "volumesnapshots"}

_SCOPE_PHRASE = {"own": "their own data", "team-shared": "their team's shared data",
                 "team": "their team's data", "any": "any data"}


def is_data_kind(group: str, kind: str) -> bool:
    return (group, kind) in DATA_KINDS


def data_references(group: str, kind: str, obj: Any) -> tuple[tuple[str, Reference], ...]:
    """What creating a data object reads: the claim or snapshot a new claim is cloned from, the
    claim a new snapshot is taken of."""
    if not is_object(obj):
        return ()
    if (group, kind) == ("", PVC):
        return tuple(("", r) for r in clone_sources(obj.get("spec"), "spec"))
    if (group, kind) == (SNAPSHOT_GROUP, SNAPSHOT):
        claim = resolve(obj, "/spec/source/persistentVolumeClaimName")
        if isinstance(claim, str) and claim:
            return (("", Reference(PVC, claim, False, "spec.source.persistentVolumeClaimName", clone=True)),)
    return ()


#: A data object's shape by whether it is shared: one of two JSON texts, written once.
_SHAPES = {shared: json.dumps({"data": True, "shareable": shared}, separators=(",", ":")) for shared in (False, True)}


def shape(obj: object) -> str:
    """What the ledger keeps of a data object: whether its owner shares it with the team."""
    return _SHAPES[str(annotations_at(obj).get(SHAREABLE_ANNOTATION, "")).lower() == "true"]


def decide_data(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    action = plan.action
    assert action is not None
    if plan.identity.is_actor:
        return _controller(plan, facts)
    if action is Action.LAUNCH:
        return _create(plan, policy, facts)
    return _change(plan, policy, facts)


def _controller(plan: Plan, facts: Facts) -> Decision:
    """Claims from StatefulSet and ephemeral-volume templates carry the stamped owner."""
    ident, req = plan.identity, plan.request
    if plan.action is Action.LAUNCH:
        ann = annotations_at(req.obj)
        owner, team = str(ann.get(OWNER_ANNOTATION, "")), str(ann.get(TEAM_ANNOTATION, ""))
        return Decision(allowed=True, rule="trusted-controller", action=plan.action, owner=owner, team=team,
                        reason=f"created by controller {ident.user}",
                        reserve=Reservation(owner, team, "", 0, False, shape(req.obj)))
    return Decision(allowed=True, rule="trusted-controller", action=plan.action,
                    reason=f"controller {ident.user}", release=plan.action is Action.KILL)


def _create(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    ident, req = plan.identity, plan.request
    violations: list[Violation] = []
    held = facts.target
    if held is not None and held.owner != ident.user:
        violations.append(violation(policy, "ownership",
            f"the gateway's ledger holds {plan.display_kind} {plan.display_ref} for {held.owner or 'nobody'}; "
            "it may still exist"))
    ann = annotations_at(req.obj)
    claimed = ann.get(OWNER_ANNOTATION)
    if claimed not in (None, "", ident.user):
        violations.append(violation(policy, "owner-annotation",
            f"the object names {claimed} as owner, but {ident.user} is creating it"))
    requested = ann.get(TEAM_ANNOTATION)
    if requested not in (None, "") and requested not in ident.teams:
        violations.append(violation(policy, "team-annotation",
            f"{ident.describe()} is not in team {requested} (their teams: {', '.join(ident.teams) or 'none'})"))
    if not violations:
        label_checks(plan, policy, plan.owner, plan.team, ("",), violations)
    access_checks(plan, policy, facts, violations)
    _squatting(plan, policy, facts, violations)
    return conclude(plan, violations, allow_rule="data-owner", gpus=0,
                    allow_reason=f"{ident.describe()} owns the {plan.display_kind} they create",
                    reserve=Reservation(plan.owner, plan.team, ident.role or "", 0, False, shape(req.obj)),
                    owner=plan.owner, team=plan.team)


def _squatting(plan: Plan, policy: Policy, facts: Facts, violations: list[Violation]) -> None:
    """Creating a name that admitted workloads of someone else reference (and so will read):
    only for their owner, or whom `modify` lets change the owner's workloads."""
    ident = plan.identity
    for owner, team in dict.fromkeys(facts.referrers):
        rel = relation(ident, owner, team)
        if rel == "own" or policy.may(ident.role, "modify", rel):
            continue
        of_team = f" (team {team})" if team else ""
        violations.append(violation(policy, "data-access",
            f"{ident.describe()} may not create {plan.display_kind} {plan.display_ref}: a workload of {owner}"
            f"{of_team} references it, and its pods would read what {ident.user} puts there",
            hint=f"Choose another name, or ask {owner} to create it."))
        return


def _change(plan: Plan, policy: Policy, facts: Facts) -> Decision:
    ident, req, target, action = plan.identity, plan.request, facts.target, plan.action
    assert action is not None
    violations: list[Violation] = []
    if target is None or not target.owner:
        if ident.role not in policy.unowned_roles:
            violations.append(violation(policy, "unowned-object",
                f"{ident.describe()} may not {action.value} {plan.display_kind} {plan.display_ref}, "
                "which has no recorded owner"))
        return conclude(plan, violations, allow_rule="unowned-object", gpus=0, release=action is Action.KILL,
                        allow_reason=f"{ident.describe()} may change objects with no recorded owner")
    verb = action.value
    rel = relation(ident, target.owner, target.team)
    if rel != "own" and not policy.may(ident.role, verb, rel):  # one's own data is always one's own
        widest = policy.widest_scope(ident.role, verb)
        can = f"may {verb} only {_SCOPE_PHRASE[widest]}" if widest else f"may not {verb} others' data"
        team = f" (team {target.team})" if target.team else ""
        violations.append(violation(policy, "ownership",
            f"{ident.describe()} {can}; {plan.display_kind} {plan.display_ref} belongs to {target.owner}{team}"))
    reserve = None
    owner, team = target.owner, target.team
    if action is Action.MODIFY:
        owner, team = _reassigned(plan, policy, target, rel, violations)
        label_checks(plan, policy, owner, team, ("",), violations)
        reserve = Reservation(owner, team, target.role, 0, False, shape(req.obj))
    return conclude(plan, violations, allow_rule="ownership", gpus=0, reserve=reserve,
                    release=action is Action.KILL, owner=owner, team=team,
                    allow_reason=f"{ident.describe()} may {verb} {_SCOPE_PHRASE[rel]}")


def _reassigned(plan: Plan, policy: Policy, target: Target, rel: str, violations: list[Violation]) -> tuple[str, str]:
    req, ident = plan.request, plan.identity
    old, new = annotations_at(req.old_obj), annotations_at(req.obj)
    if all(old.get(k) == new.get(k) for k in (OWNER_ANNOTATION, TEAM_ANNOTATION)):
        return target.owner, target.team
    if policy.may(ident.role, "reassign", rel):
        return str(new.get(OWNER_ANNOTATION) or target.owner), str(new.get(TEAM_ANNOTATION) or target.team)
    violations.append(violation(policy, "owner-annotation",
                                f"{ident.describe()} may not change the owner or team of {plan.display_kind}"))
    return target.owner, target.team
