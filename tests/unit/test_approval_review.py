"""Who may approve or deny an approval (docs/approvals.md): for a modify, kill or exec, whoever
approves holds that action and `approve` over the workload's owner, whatever the requester's
team; a launch keeps the rule of the requester's team. And an approval for a workload lifts
nothing once the workload belongs to someone else."""

from __future__ import annotations

from dataclasses import replace

from conftest import ADMIN, INTERN, delete_review, make_job, review
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.approvals import TARGET_ACTIONS, approvers, bound, deny_refusal, review_refusal
from gateway.admission.identity import Identity
from gateway.admission.plan import Approval
from gateway.admission.policy import Policy, relation
from gateway.admission.review import parse_review

VISION_LEAD = ("gpu-leads", "team:vision")
NLP_LEAD = ("gpu-leads", "team:nlp")
SUBJECT = "PyTorchJob research/x"


def approve_kill(policy: Policy, user: str, groups: tuple[str, ...], *, owner: str | None = "bob",
                 team: str = "nlp", action: str = "kill") -> str | None:
    """Whether `user` may approve intern alice's (team vision) `action` of bob's (team nlp) job."""
    return review_refusal(policy, policy.identity(user, groups), "alice", ["vision"], action,
                          target_owner=owner, target_team=team, subject=SUBJECT)


def test_the_requesters_lead_may_not_approve_a_kill_of_another_teams_workload(policy: Policy) -> None:
    assert approve_kill(policy, "lena", VISION_LEAD) == (
        "user lena (role lead) may not approve a kill of PyTorchJob research/x: it belongs to bob (team nlp), "
        "and lena may kill only their team's workloads")
    for action in ("modify", "exec"):
        refusal = approve_kill(policy, "lena", VISION_LEAD, action=action)
        assert refusal is not None and f"lena may {action} only their team's workloads" in refusal


def test_the_owners_lead_and_admins_may(policy: Policy) -> None:
    assert approve_kill(policy, "nate", NLP_LEAD) is None
    assert approve_kill(policy, "root", ADMIN) is None
    assert approve_kill(policy, "lena", VISION_LEAD, team="vision") is None  # a vision workload: hers


def test_nobody_else_may(policy: Policy) -> None:
    assert "a different person must approve" in (approve_kill(policy, "alice", INTERN) or "")
    owner = approve_kill(policy, "bob", ("gpu-researchers", "team:nlp"))  # may kill it, may not approve
    assert owner == ("user bob (role researcher) may not approve a kill of PyTorchJob research/x: it belongs to "
                     "bob (team nlp), and bob may not approve requests")
    assert approve_kill(policy, "carol", ("gpu-interns", "team:nlp")) is not None
    unowned = approve_kill(policy, "nate", NLP_LEAD, owner="", team="")
    assert unowned is not None and "it has no recorded owner" in unowned
    assert approve_kill(policy, "root", ADMIN, owner="", team="") is None
    unrecorded = approve_kill(policy, "root", ADMIN, owner=None)
    assert unrecorded is not None and "ask for a new one" in unrecorded


def test_a_launch_keeps_the_requesters_team_rule(policy: Policy) -> None:
    lena, nate = policy.identity("lena", VISION_LEAD), policy.identity("nate", NLP_LEAD)
    assert review_refusal(policy, lena, "alice", ["vision"], "launch") is None
    refusal = review_refusal(policy, nate, "alice", ["vision"], "launch")
    assert refusal is not None and "another team's requests" in refusal


def test_who_may_deny(policy: Policy) -> None:
    def deny(user: str, groups: tuple[str, ...]) -> str | None:
        return deny_refusal(policy, policy.identity(user, groups), "alice", ["vision"], "kill",
                            target_owner="bob", target_team="nlp", subject=SUBJECT)

    assert deny("lena", VISION_LEAD) is None  # the requester's lead, as before
    assert deny("nate", NLP_LEAD) is None  # whoever may approve it
    assert deny("root", ADMIN) is None
    assert deny("carol", INTERN) is not None
    assert "a different person" in (deny("alice", INTERN) or "")


ROLES = st.sampled_from([None, "intern", "researcher", "lead", "admin", "agent"])
TEAMS = st.lists(st.sampled_from(["vision", "nlp", "speech"]), max_size=2, unique=True).map(tuple)
USERS = st.sampled_from(["alice", "bob", "lena", "nate"])


@given(role=ROLES, reviewer=USERS, reviewer_teams=TEAMS, requester=USERS, requester_teams=TEAMS,
       owner=st.sampled_from(["", "alice", "bob", "lena"]), team=st.sampled_from(["", "vision", "nlp"]),
       action=st.sampled_from(TARGET_ACTIONS))
def test_approving_an_action_on_a_workload_needs_rights_over_its_owner(
        policy: Policy, role: str | None, reviewer: str, reviewer_teams: tuple[str, ...], requester: str,
        requester_teams: tuple[str, ...], owner: str, team: str, action: str) -> None:
    ident = Identity(reviewer, (), role, tuple(sorted(reviewer_teams)))
    refusal = review_refusal(policy, ident, requester, requester_teams, action, target_owner=owner,
                             target_team=team, subject=SUBJECT)
    scope = relation(ident, owner, team)
    expected = reviewer != requester and policy.may(role, action, scope) and policy.may(role, "approve", scope)
    assert (refusal is None) == expected
    # The requester's teams play no part: sharing one with the reviewer grants nothing.
    assert (review_refusal(policy, ident, requester, reviewer_teams, action, target_owner=owner, target_team=team)
            is None) == expected
    # Whoever may approve may deny.
    if expected:
        assert deny_refusal(policy, ident, requester, requester_teams, action, target_owner=owner,
                            target_team=team) is None


def kill_approval(owner: str | None, team: str = "nlp", action: str = "kill") -> Approval:
    return Approval("apv-1", "alice", action, "Job", "research", "x", 0, "nate", owner, team)


def test_an_approval_is_bound_to_the_owner_it_was_approved_for() -> None:
    bobs = Target("bob", "nlp", "researcher", 8)
    assert bound(kill_approval("bob"), bobs)
    assert not bound(kill_approval("bob"), Target("carol", "nlp", "researcher", 8))  # reassigned
    assert not bound(kill_approval("bob"), Target("bob", "vision", "researcher", 8))  # moved to another team
    assert not bound(kill_approval("bob"), None)
    assert not bound(kill_approval(None), bobs)  # asked for before owners were recorded
    assert bound(kill_approval("", ""), None) and bound(kill_approval("", ""), Target("", "", "", 8))
    assert bound(kill_approval(None, "", action="launch"), None)  # launches are not bound


def test_a_reassigned_workloads_approval_lifts_nothing(policy: Policy) -> None:
    job = make_job(gpus=8).named("research", "x").obj()
    plan = prepare(parse_review(delete_review(job, user="alice", groups=INTERN).body()), policy)
    approval = kill_approval("bob")
    allowed = decide(plan, policy, Facts(target=Target("bob", "nlp", "researcher", 8), approvals=(approval,)))
    assert allowed.allowed and allowed.rule == "approval" and allowed.use_approval == "apv-1"
    moved = decide(plan, policy, Facts(target=Target("carol", "nlp", "researcher", 8), approvals=(approval,)))
    assert not moved.allowed and moved.rule == "ownership" and not moved.use_approval
    # Without the approval the kill of someone else's workload is an ownership denial.
    assert decide(plan, policy, Facts(target=Target("bob", "nlp", "researcher", 8))).rule == "ownership"


# ------------------------------------------------------------------ who a denial names


def test_a_denial_names_the_roles_and_subjects_that_may_approve(policy: Policy) -> None:
    alice = policy.identity("alice", INTERN)
    assert approvers(policy, alice, "launch") == \
        "a lead in team vision (group gpu-leads) or an admin (group gpu-admins)"
    assert approvers(policy, alice, "kill", owner="bob", team="nlp") == \
        "a lead in team nlp (group gpu-leads) or an admin (group gpu-admins)"
    assert approvers(policy, alice, "kill", owner="", team="") == "an admin (group gpu-admins)"
    bound_users = replace(policy, bindings={**policy.bindings, **{f"user:l{i}": frozenset({"lead"}) for i in range(4)}})
    assert approvers(bound_users, alice, "launch").startswith(
        "a lead in team vision (group gpu-leads, user l0, user l1, 2 more) or")


@given(action=st.sampled_from(["launch", "modify", "kill", "exec"]), team=st.sampled_from(["vision", "nlp", ""]),
       role=st.sampled_from(["admin", "lead", "researcher", "intern", "agent"]))
def test_whom_a_denial_names_may_approve_and_nobody_else(policy: Policy, action: str, team: str, role: str) -> None:
    alice = policy.identity("alice", INTERN)
    named = approvers(policy, alice, action, owner="bob", team=team)
    where = team if action in TARGET_ACTIONS else "vision"

    def may(teams: tuple[str, ...]) -> bool:
        reviewer = Identity("someone", (), role, teams)
        return review_refusal(policy, reviewer, "alice", ["vision"], action, target_owner="bob",
                              target_team=team) is None

    anywhere, in_team = f" {role} (" in named, f" {role} in team {where} (" in named
    assert anywhere == may(())
    assert in_team == (not may(()) and bool(where) and may((where,)))


def test_without_anyone_to_approve_the_rules_own_hint_stays(policy: Policy) -> None:
    nobody = replace(policy, bindings={k: v for k, v in policy.bindings.items() if not v & {"admin", "lead"}})
    plan = prepare(parse_review(review(make_job(gpus=8, parallelism=4).obj(), user="alice", groups=INTERN).body()),
                   nobody)
    assert approvers(nobody, plan.identity, "launch") == ""
    assert decide(plan, nobody, Facts()).reason.endswith("this one asks for 32 (4 pods x 8 nvidia.com/gpu). "
                                                         "Ask a lead for an exception.")
