"""A proposed policy's impact on what runs and waits (admission/impact.py): each launch decided again,
in admission order, on what the ledger keeps of it."""

from __future__ import annotations

from dataclasses import replace

from gateway.admission.decision import Mode
from gateway.admission.impact import QUEUED, RUNNING, Held, would_deny
from gateway.admission.policy import Policy, SecondPerson
from gateway.admission.scheduling_settings import OverQuota, Scheduling


def held(name: str, gpus: int, *, owner: str = "alice", role: str = "intern", team: str = "vision",
         state: str = RUNNING) -> Held:
    return Held(state, "jobs.batch", "research", name, owner, team, role, gpus)


def refused(policy: Policy, workloads: list[Held]) -> list[tuple[str, str]]:
    return [(r.workload.name, r.rule) for r in would_deny(policy, workloads)]


def test_the_policy_in_force_denies_nothing_it_admitted(policy: Policy) -> None:
    assert refused(policy, [held("a", 8), held("b", 8), held("r", 256, owner="bob", role="researcher")]) == []


def test_a_lower_cap_denies_the_launches_past_it_in_admission_order(policy: Policy) -> None:
    tighter = replace(policy, user_caps={"alice": 8}, team_caps={"vision": 12})
    assert refused(tighter, [held("a", 8), held("b", 8), held("c", 4, owner="carol")]) == [("b", "user-quota")]
    # A denied launch holds nothing in the replay: c still fits the team after b is refused.
    [first] = would_deny(tighter, [held("a", 8), held("b", 8)])
    assert first.reason == "user alice (role intern) may hold at most 8 GPUs at once; 8 are in use and this asks " \
                           "for 8 more"


def test_a_role_that_may_no_longer_launch_or_a_smaller_limit(policy: Policy) -> None:
    no_interns = replace(policy, permissions=frozenset(p for p in policy.permissions if p[0] != "intern"))
    assert refused(no_interns, [held("a", 8)]) == [("a", "no-role")]
    assert refused(policy, [held("gone", 8, role="trainee")]) == [("gone", "no-role")]
    small = replace(policy, limits={**policy.limits, "intern": replace(policy.limits["intern"],
                                                                       max_gpus_per_workload=4)})
    assert refused(small, [held("a", 8)]) == [("a", "workload-gpu-limit")]


def test_rules_in_warn_or_dry_run_mode_deny_nothing(policy: Policy) -> None:
    tighter = replace(policy, user_caps={"alice": 8}, modes={"user-quota": Mode.WARN})
    assert refused(tighter, [held("a", 8), held("b", 8)]) == []


def test_queue_mode_queues_what_could_start_and_denies_what_never_could(policy: Policy) -> None:
    queueing = replace(policy, team_caps={"vision": 16},
                       scheduling=Scheduling(roles={"researcher": OverQuota.QUEUE}))
    bob = {"owner": "bob", "role": "researcher"}
    assert refused(queueing, [held("r1", 16, **bob), held("r2", 8, state=QUEUED, **bob),
                              held("r3", 32, state=QUEUED, **bob)]) == [("r3", "team-quota")]
    rejecting = replace(queueing, scheduling=Scheduling())
    assert refused(rejecting, [held("r1", 16, **bob), held("r2", 8, state=QUEUED, **bob)]) == [("r2", "team-quota")]


def test_a_second_person_limit_lowered_below_a_running_launch(policy: Policy) -> None:
    strict = replace(policy, second_person=SecondPerson(launch_over_gpus=64))
    assert refused(strict, [held("r", 128, owner="bob", role="researcher")]) == [("r", "second-person")]
