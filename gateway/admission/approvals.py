"""Two-person approvals: which denials an approval can lift, and who may approve (docs/approvals.md).

Pure: the store loads the requester's live approvals for the request's object into
`Facts.approvals` after a denial, and the decision names the approval it used. An approval
for a modify, kill or exec is bound to the owner and team its workload had in the ledger when
it was asked for: only someone with rights over that owner's workloads may approve it, and it
lifts nothing once the workload belongs to someone else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.admission.decision import Action, Mode, Violation
from gateway.admission.identity import Identity
from gateway.admission.plan import Approval, Plan, Target
from gateway.admission.policy import Policy, relation

#: Rules an approval can lift. Never an unreadable object, owner or team spoofing, data
#: access or escape hatches: those are not exceptions a second person can vouch for.
WAIVABLE = frozenset({
    "workload-gpu-limit", "user-quota", "team-quota", "ownership", "unowned-workload", "priority-class",
    "second-person",
})

#: Replacing the policy through the admin API: approved for one proposal (kind `Policy`,
#: name = the proposal's digest), by a reviewer whose role may `manage` at scope `any`.
POLICY_CHANGE = "policy-change"

#: Actions an approval can be asked for; `gpus` bounds those that reserve GPUs.
APPROVABLE_ACTIONS = (*(a.value for a in Action), POLICY_CHANGE)
SIZED_ACTIONS = (Action.LAUNCH.value, Action.MODIFY.value)

#: Actions on a workload that already exists: whoever approves one must be allowed that action,
#: and `approve`, at their relation to the workload's recorded owner and team.
TARGET_ACTIONS = (Action.MODIFY.value, Action.KILL.value, Action.EXEC.value)

_SCOPE_PHRASE = {"own": "their own workloads", "team-shared": "their team's shared workloads",
                 "team": "their team's workloads", "any": "any workload"}


def _kind_matches(wanted: str, plan: Plan) -> bool:
    """The object's kind in any case; for a `/scale`, the resource's plural also matches."""
    req = plan.request
    wanted = wanted.lower()
    if wanted in (req.kind.kind.lower(), plan.display_kind.lower()):
        return True
    resource = req.resource.lower()
    return wanted == resource or (req.sub_resource == "scale" and resource in (wanted + "s", wanted + "es"))


def matches(approval: Approval, plan: Plan, gpus: int) -> bool:
    """Whether `approval` covers this request: same person, action, object, and enough GPUs."""
    req = plan.request
    action = plan.action.value if plan.action else ""
    return (
        approval.requester == req.username
        and approval.action == action
        and approval.namespace == req.namespace
        and approval.name == (plan.key[2] if plan.key else req.name)
        and _kind_matches(approval.kind, plan)
        and (action not in SIZED_ACTIONS or gpus <= approval.gpus)
    )


def waiver(plan: Plan, violations: Sequence[Violation], approvals: Iterable[Approval], gpus: int) -> Approval | None:
    """The approval that lifts every enforced violation, or None."""
    enforced = [v for v in violations if v.mode is Mode.ENFORCE]
    if not enforced or any(v.rule not in WAIVABLE for v in enforced):
        return None
    return next((a for a in approvals if matches(a, plan, gpus)), None)


def bound(approval: Approval, target: Target | None) -> bool:
    """Whether `approval` may lift a denial of a request on `target` (the ledger's record now).

    A modify, kill or exec approval only while the workload still belongs to the owner and team
    recorded when it was asked for (its reviewer was checked against those); one whose owner was
    never recorded (asked for before owners were recorded) never. Launches are not bound.
    """
    if approval.action not in TARGET_ACTIONS:
        return True
    now = (target.owner, target.team) if target is not None else ("", "")
    return approval.target_owner is not None and (approval.target_owner, approval.target_team) == now


def review_refusal(policy: Policy, reviewer: Identity, requester: str, requester_teams: Sequence[str],
                   action: str = "", *, target_owner: str | None = None, target_team: str = "",
                   subject: str = "") -> str | None:
    """Why `reviewer` may not approve a request of `requester`, or None when they may.

    Nobody approves their own request. A modify, kill or exec (`TARGET_ACTIONS`) is of an
    existing workload, owned by `target_owner` in `target_team` as the ledger recorded them when
    the approval was asked for ("" when it recorded no owner: only scope `any` covers it; None
    when not recorded at all: nobody may approve): the reviewer needs that action and `approve`
    at their relation to that owner and team; the requester's teams do not matter. Anything
    else (a launch: no workload yet) needs `approve` at scope `team` for a requester sharing a
    team with the reviewer, `any` otherwise; a policy change also `manage` at `any`. `subject`
    (`PyTorchJob research/x`) names the workload in the refusal.
    """
    if action in TARGET_ACTIONS and reviewer.user != requester:
        return _target_refusal(policy, reviewer, action, target_owner, target_team, subject)
    return _requester_refusal(policy, reviewer, requester, requester_teams, action)


def deny_refusal(policy: Policy, reviewer: Identity, requester: str, requester_teams: Sequence[str],
                 action: str = "", *, target_owner: str | None = None, target_team: str = "",
                 subject: str = "") -> str | None:
    """Why `reviewer` may not deny a request of `requester`, or None when they may.

    A denial lifts nothing: whoever may approve the request may deny it, and so may whoever
    holds `approve` for the requester (the rule of a launch), whatever the request is for.
    Nobody denies their own request.
    """
    refusal = review_refusal(policy, reviewer, requester, requester_teams, action, target_owner=target_owner,
                             target_team=target_team, subject=subject)
    if refusal is None or _requester_refusal(policy, reviewer, requester, requester_teams, action) is None:
        return None
    return refusal


def _requester_refusal(policy: Policy, reviewer: Identity, requester: str, requester_teams: Sequence[str],
                       action: str) -> str | None:
    """`approve` over the requester: scope `team` covers requesters sharing a team with the
    reviewer, `any` everyone; a policy change also needs `manage` at `any`."""
    if reviewer.user == requester:
        return f"{reviewer.user} asked for this approval; a different person must approve or deny it"
    if action == POLICY_CHANGE and not policy.may(reviewer.role, "manage", "any"):
        return f"{reviewer.describe()} may not approve policy changes (needs manage at scope any)"
    scope = "team" if set(requester_teams) & set(reviewer.teams) else "any"
    if policy.may(reviewer.role, "approve", scope):
        return None
    where = "their team's" if scope == "team" else "another team's"
    return f"{reviewer.describe()} may not approve {where} requests ({requester})"


def _target_refusal(policy: Policy, reviewer: Identity, action: str, owner: str | None, team: str,
                    subject: str) -> str | None:
    """The action and `approve`, both at the reviewer's relation to the workload's owner and team."""
    head = f"{reviewer.describe()} may not approve a {action} of {subject or 'this workload'}"
    if owner is None:
        return f"{head}: whose workload it is was not recorded when the approval was asked for; ask for a new one"
    scope = relation(reviewer, owner, team)
    may_act, may_approve = policy.may(reviewer.role, action, scope), policy.may(reviewer.role, "approve", scope)
    if may_act and may_approve:
        return None
    whose = f"it belongs to {owner}{f' (team {team})' if team else ''}" if owner else "it has no recorded owner"
    if not may_act:
        widest = policy.widest_scope(reviewer.role, action)
        can = f"may {action} only {_SCOPE_PHRASE[widest]}" if widest else f"may not {action} workloads"
    else:
        widest = policy.widest_scope(reviewer.role, "approve")
        can = (f"may approve only requests on {_SCOPE_PHRASE[widest]}" if widest
               else "may not approve requests")
    return f"{head}: {whose}, and {reviewer.user} {can}"


def past_team_caps(policy: Policy, approval: Mapping[str, Any], teams_held: Mapping[str, int]) -> list[str]:
    """What approving a launch (`approval`, a row of the approvals store) would take past its
    team's cap, for the approver to read: the requester's teams (a launch is charged to one of
    them) that hold `teams_held` GPUs now. A modify is left out: what its workload holds
    already is not in the approval."""
    if approval.get("action") != Action.LAUNCH.value:
        return []
    gpus, found = int(approval.get("gpus") or 0), []
    for team in approval.get("requester_teams") or ():
        cap, held = policy.team_cap(team), teams_held.get(team, 0)
        if cap is not None and held + gpus > cap:
            found.append(f"this approval lets {approval['requester']} launch up to {gpus} GPUs past team {team}'s "
                         f"cap of {cap}: the team holds {held} now and would hold {held + gpus}")
    return found


#: A reviewer who is nobody in particular: never the requester, never a workload's owner.
_SOMEONE = "\x00someone"


def approvers(policy: Policy, requester: Identity, action: str, *, owner: str | None = None, team: str = "") -> str:
    """Who may approve an exception for `requester`'s `action` (on the workload of `owner` and
    `team`, for a modify, kill or exec) under `policy`, as a denial names them: each role whose
    holders `review_refusal` lets approve it, where they must be, and the subjects bound to it,
    e.g. "a lead in team vision (group gpu-leads) or an admin (group gpu-admins)"; "" when nobody
    may. Only roles and bindings are named, which every signed-in person may read (GET
    /api/v1/roles): never who is in a group, nor anything about the workload the denial does not say."""
    # The answer depends on these alone (the reviewer is never the requester nor the owner).
    key = ("approvers", action, requester.teams, owner is None, team)
    return policy.derived(key, lambda: _approvers(policy, requester, action, owner, team))


def _approvers(policy: Policy, requester: Identity, action: str, owner: str | None, team: str) -> str:
    teams = ((team,) if team else ()) if action in TARGET_ACTIONS else requester.teams

    def may(role: str, their_teams: tuple[str, ...]) -> bool:
        reviewer = Identity(_SOMEONE, (), role, their_teams)
        return review_refusal(policy, reviewer, requester.user, requester.teams, action, target_owner=owner,
                              target_team=team) is None

    near: list[str] = []  # those in the team first: the nearest to ask
    anyone: list[str] = []
    for role in reversed(policy.role_order):
        holders = policy.holders(role)
        if not holders:
            continue
        if may(role, ()):
            where, into = "", anyone
        elif teams and may(role, teams):
            where, into = f" in team {' or '.join(teams)}", near
        else:
            continue
        names = [h.replace(":", " ", 1) for h in holders[:3]] + [f"{len(holders) - 3} more"] * (len(holders) > 3)
        into.append(f"{'an' if role[:1] in 'aeiou' else 'a'} {role}{where} ({', '.join(names)})")
    return " or ".join(near + anyone)


def ask_approval(policy: Policy, plan: Plan, *, owner: str | None = None, team: str = "", gpus: int = 0) -> str:
    """How to ask for an exception to a denial of `plan`, and who may approve one ("" when nobody
    may, or the requester is a controller): `(gpuctl request ...): a lead in team vision (group
    gpu-leads) may approve it.` `owner` and `team` are the workload's for a modify, kill or exec."""
    if plan.action is None or plan.identity.is_actor:
        return ""
    action = plan.action.value
    who = approvers(policy, plan.identity, action, owner=owner, team=team)
    if not who:
        return ""
    size = f" --gpus {gpus}" if action in SIZED_ACTIONS else ""
    return f"(gpuctl request {action} {plan.display_kind} {plan.display_ref}{size} --reason ...): {who} may approve it."


def may_grant(policy: Policy, granter: Identity) -> bool:
    return policy.may(granter.role, "grant", "any")
