"""From violations to a Decision: deny by the first enforced one, else admit with warnings."""

from __future__ import annotations

from gateway.admission.approvals import waiver
from gateway.admission.decision import Decision, Mode, Reservation, Violation
from gateway.admission.plan import Approval, Plan
from gateway.admission.policy import RULES, Policy


def violation(policy: Policy, rule: str, message: str, hint: str = "") -> Violation:
    """A broken rule, in the mode the policy sets for it; `hint` replaces the rule's own."""
    return Violation(rule, policy.mode(rule), message, hint)


def what(plan: Plan) -> str:
    """`launch of PyTorchJob research/llm`: the request, as denials and warnings name it."""
    assert plan.action is not None
    return f"{plan.action.value} of {plan.display_kind} {plan.display_ref}"


def conclude(
    plan: Plan,
    violations: list[Violation],
    *,
    allow_rule: str,
    allow_reason: str,
    gpus: int,
    reserve: Reservation | None = None,
    release: bool = False,
    owner: str = "",
    team: str = "",
    approvals: tuple[Approval, ...] = (),
) -> Decision:
    """Deny by the first enforced violation unless an approval lifts it, else admit (see `admit`)."""
    denied = denial(plan, violations, gpus=gpus, owner=owner, team=team)
    if denied is not None:
        return overruled(plan, denied, approvals, reserve=reserve, release=release)
    return admit(plan, violations, rule=allow_rule, reason=allow_reason, gpus=gpus, reserve=reserve,
                  release=release, owner=owner, team=team)


def denial(plan: Plan, violations: list[Violation], *, gpus: int, owner: str = "", team: str = "") -> Decision | None:
    """The denial by the first enforced violation, or None when no violation is enforced.

    A launch asks this before `_admit`, so that its allow reason (which describes the
    workload's GPUs) is built only for a request that is admitted.
    """
    for v in violations:
        if v.mode is Mode.ENFORCE:
            message = f"gpu-gateway: denied {what(plan)}: {v.message}. {v.hint or RULES.get(v.rule, '')}".strip()
            return Decision(
                allowed=False, rule=v.rule, reason=message, mode=Mode.ENFORCE, action=plan.action, gpus=gpus,
                audited=True, violations=tuple(violations), owner=owner, team=team,
            )
    return None


def admit(
    plan: Plan,
    violations: list[Violation],
    *,
    rule: str,
    reason: str,
    gpus: int,
    reserve: Reservation | None = None,
    release: bool = False,
    owner: str = "",
    team: str = "",
) -> Decision:
    """An audited allow, once `_denial` found nothing enforced. Violations in warn or
    dry-run mode take the place of `rule` and `reason`, and warnings name them."""
    mode = Mode.ENFORCE
    warnings: tuple[str, ...] = ()
    if violations:
        phrase = what(plan)
        rule, mode = violations[0].rule, violations[0].mode
        warnings = tuple(
            f"gpu-gateway: {phrase} would be denied by rule {v.rule}: {v.message}"
            for v in violations if v.mode is Mode.WARN
        )
        reason = "; ".join(f"would deny ({v.rule}, {v.mode.value}): {v.message}" for v in violations)
    return Decision(
        allowed=True, rule=rule, reason=reason, mode=mode, action=plan.action, gpus=gpus, audited=True,
        warnings=warnings, violations=tuple(violations), reserve=reserve, release=release, owner=owner,
        team=team,
    )


def overruled(
    plan: Plan, denied: Decision, approvals: tuple[Approval, ...], *,
    reserve: Reservation | None = None, release: bool = False,
) -> Decision:
    """`denied`, or the allow an approval gives instead when it lifts every enforced violation.

    The allow names the approval (rule `approval`) and carries its id for the store to mark used;
    a cap it takes the owner or their team past is a warning the requester sees (kubectl prints it).
    """
    approval = waiver(plan, denied.violations, approvals, denied.gpus) if approvals else None
    if approval is None:
        return denied
    enforced = [v for v in denied.violations if v.mode is Mode.ENFORCE]
    lifted = "; ".join(f"{v.rule}: {v.message}" for v in enforced)
    past = tuple(f"gpu-gateway: {what(plan)} is admitted by approval {approval.id} past a cap: {v.message}"
                 for v in enforced if v.rule in ("user-quota", "team-quota"))
    return Decision(
        allowed=True, rule="approval", mode=Mode.ENFORCE, action=plan.action, gpus=denied.gpus, audited=True,
        reason=f"approval {approval.id} (approved by {approval.approver or 'unknown'}) lifts: {lifted}",
        warnings=past, violations=denied.violations, reserve=reserve, release=release, owner=denied.owner,
        team=denied.team, use_approval=approval.id,
    )
