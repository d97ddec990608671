"""Two-person approvals: which denials an approval can lift, and who may approve (docs/approvals.md).

Pure: the store loads the requester's live approvals for the request's object into
`Facts.approvals` after a denial, and the decision names the approval it used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.core.decision import Action, Mode, Violation
from gateway.core.identity import Identity
from gateway.core.plan import Approval, Plan
from gateway.core.policy import Policy

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


def review_refusal(policy: Policy, reviewer: Identity, requester: str, requester_teams: Sequence[str],
                   action: str = "") -> str | None:
    """Why `reviewer` may not approve or deny a request of `requester`, or None when they may.

    Nobody reviews their own request; `approve` on scope `team` covers requesters sharing a
    team with the reviewer, `any` everyone. A policy change also needs `manage` at `any`.
    """
    if reviewer.user == requester:
        return f"{reviewer.user} asked for this approval; a different person must approve or deny it"
    if action == POLICY_CHANGE and not policy.may(reviewer.role, "manage", "any"):
        return f"{reviewer.describe()} may not approve policy changes (needs manage at scope any)"
    scope = "team" if set(requester_teams) & set(reviewer.teams) else "any"
    if policy.may(reviewer.role, "approve", scope):
        return None
    where = "their team's" if scope == "team" else "another team's"
    return f"{reviewer.describe()} may not approve {where} requests ({requester})"


def may_grant(policy: Policy, granter: Identity) -> bool:
    return policy.may(granter.role, "grant", "any")
