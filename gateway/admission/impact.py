"""What a proposed policy would have denied of the workloads that run and wait now. Pure.

`gpuctl policy diff` (POST /api/v1/policy/diff) shows it beside the diff. The ledger keeps, for
each workload it admitted, the owner, their team, the role they had and the GPUs, not the
object: so each launch is decided again on what those settle, in the order they were admitted
(running ones by admission time, then the queue in its order), each against the GPUs the
launches before it would hold had the proposal been in force. A launch the proposal denies
holds nothing in that replay. What needs the object (data access, escape hatches, priority
classes, owner annotations) or the person's groups (a changed binding) is not decided again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.admission.admission import quota_violations
from gateway.admission.decision import Mode, Violation
from gateway.admission.policy import Policy
from gateway.admission.quota import Usage
from gateway.admission.scheduling_settings import OverQuota

RUNNING, QUEUED = "running", "queued"


@dataclass(frozen=True, slots=True)
class Held:
    """A workload the ledger holds (charged) or queues, as its launch is decided again."""

    state: str
    """`running` (its GPUs are charged) or `queued` (waiting behind the quota gate)."""
    resource: str
    namespace: str
    name: str
    owner: str
    team: str
    role: str
    """The owner's role when it was admitted."""
    gpus: int


@dataclass(frozen=True, slots=True)
class Refusal:
    workload: Held
    rule: str
    reason: str


def would_deny(policy: Policy, held: Iterable[Held]) -> list[Refusal]:
    """The workloads of `held` (running first, then queued, each in admission order) whose launch
    `policy` would deny, with the first rule that would."""
    users: dict[str, int] = {}
    teams: dict[str, int] = {}
    refused = []
    for w in held:
        first = next((v for v in _violations(policy, w, Usage(users.get(w.owner, 0), teams.get(w.team, 0)))
                      if v.mode is Mode.ENFORCE), None)
        if first is not None:
            refused.append(Refusal(w, first.rule, first.message))
            continue
        users[w.owner] = users.get(w.owner, 0) + w.gpus
        if w.team:
            teams[w.team] = teams.get(w.team, 0) + w.gpus
    return refused


def _violations(policy: Policy, w: Held, usage: Usage) -> list[Violation]:
    who = f"user {w.owner} (role {w.role or 'none'})"
    if not w.role or w.role not in policy.role_order or not policy.may(w.role, "launch", "own"):
        return [Violation("no-role", policy.mode("no-role"), f"{who} may not launch GPU workloads")]
    found = []
    cap = policy.role_limits(w.role).max_gpus_per_workload
    if cap is not None and w.gpus > cap:
        found.append(Violation("workload-gpu-limit", policy.mode("workload-gpu-limit"),
                               f"{who} may launch at most {cap} GPUs per workload; this one asks for {w.gpus}"))
    over = quota_violations(policy, usage, asked=w.gpus, owner=w.owner, owner_role=w.role, team=w.team)
    if over and policy.scheduling.mode(w.role, w.team) is OverQuota.QUEUE and _could_start(policy, w):
        over = []  # queue mode: it would wait in the queue, not be denied
    found += over
    limit = policy.second_person.launch_over_gpus
    if limit is not None and w.gpus > limit:
        found.append(Violation("second-person", policy.mode("second-person"),
                               f"launching more than {limit} GPUs needs a second person's approval; "
                               f"this asks for {w.gpus}"))
    return found


def _could_start(policy: Policy, w: Held) -> bool:
    """Whether the workload fits the role's and the team's caps on its own (admission/gates.py `queued`)."""
    caps = (policy.role_limits(w.role).max_concurrent_gpus, policy.team_cap(w.team))
    return all(cap is None or w.gpus <= cap for cap in caps)
