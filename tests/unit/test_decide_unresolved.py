"""Decisions on workloads whose GPUs the gateway cannot count (rule unresolved-gpus)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from builders_workloads import load_crd
from conftest import ADMIN, INTERN, LEAD, RESEARCHER, review

from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.decision import Decision, Mode
from gateway.admission.mutation import ownership_patch
from gateway.admission.policy import Policy, RoleLimits
from gateway.admission.review import parse_review
from gateway.admission.unblocked import asks_for_gpus
from gateway.whatif import check_one


def run(policy: Policy, body: dict[str, Any], facts: Facts | None = None) -> Decision:
    return decide(prepare(parse_review(body), policy), policy, facts or Facts())


def trainjob(**trainer: Any) -> dict[str, Any]:
    tj = load_crd("trainjob-runtime.yaml")
    tj["spec"]["trainer"].update(trainer)
    return tj


def test_every_capped_role_is_denied_and_admins_are_allowed(policy: Policy) -> None:
    for groups in (INTERN, RESEARCHER, LEAD):  # leads have a per-workload cap in the default bundle
        d = run(policy, review(trainjob(), user="u", groups=groups).body())
        assert (d.allowed, d.rule) == (False, "unresolved-gpus"), groups
    d = run(policy, review(trainjob(), user="root", groups=ADMIN).body())
    assert d.allowed and d.audited and d.rule == "role-limits"
    assert d.reserve is not None and (d.reserve.owner, d.reserve.gpus) == ("root", 0)
    assert "plus GPUs it cannot count" in d.reason


def test_a_lead_without_caps_may_launch_it(policy: Policy) -> None:
    unlimited = replace(policy, limits={**policy.limits, "lead": RoleLimits()})
    assert run(unlimited, review(trainjob(), user="erin", groups=LEAD).body()).allowed


def test_a_team_cap_counts_as_a_cap_even_for_an_admin(policy: Policy) -> None:
    capped = replace(policy, team_caps={"ops": 64})
    d = run(capped, review(trainjob(), user="root", groups=(*ADMIN, "team:ops")).body())
    assert (d.allowed, d.rule) == (False, "unresolved-gpus")


def test_the_rule_can_be_trialled_in_warn_mode(policy: Policy) -> None:
    warned = replace(policy, modes={**policy.modes, "unresolved-gpus": Mode.WARN})
    d = run(warned, review(trainjob(), user="alice", groups=INTERN).body())
    assert d.allowed and d.rule == "unresolved-gpus" and d.mode is Mode.WARN
    assert "takes its GPUs from runtime torch-distributed" in d.warnings[0]


def test_an_unresolved_launch_is_not_passed_early_and_is_stamped(policy: Policy) -> None:
    plan = prepare(parse_review(review(trainjob(), user="root", groups=ADMIN).body()), policy)
    assert plan.early is None and asks_for_gpus(plan)
    assert any(op["path"] == "/metadata/annotations" for op in ownership_patch(plan))


def test_a_modify_that_makes_it_uncountable_is_denied_one_that_keeps_it_so_is_not(policy: Policy) -> None:
    counted = trainjob(numNodes=1, resourcesPerNode={"limits": {"nvidia.com/gpu": 8}})
    uncounted = trainjob()
    alices = Facts(target=Target("alice", "vision", "intern", 8))
    body = review(uncounted, old=counted, operation="UPDATE", user="alice", groups=INTERN).body()
    d = run(policy, body, alices)
    assert (d.allowed, d.rule) == (False, "unresolved-gpus")
    relabelled = copy.deepcopy(uncounted)
    relabelled["metadata"]["labels"] = {"stage": "2"}
    roots = Facts(target=Target("root", "", "admin", 0))
    body = review(relabelled, old=uncounted, operation="UPDATE", user="erin", groups=LEAD).body()
    assert run(policy, body, roots).rule != "unresolved-gpus"


def test_a_modify_of_an_unrecorded_counted_object_into_an_uncountable_one_is_a_launch(policy: Policy) -> None:
    no_gpus = trainjob(resourcesPerNode={"limits": {"cpu": 4}})
    body = review(trainjob(), old=no_gpus, operation="UPDATE", user="bob", groups=RESEARCHER).body()
    d = run(policy, body)
    assert (d.allowed, d.rule) == (False, "unresolved-gpus")


def test_gpu_gateway_check_tells_the_same(policy: Policy) -> None:
    out = check_one(trainjob(), policy=policy, user="alice", groups=INTERN, action="launch", owner=None,
                    owner_team=None, namespace=None)
    assert (out["allowed"], out["rule"]) == (False, "unresolved-gpus")
    assert out["gpus_detail"].startswith("no GPUs, plus GPUs it cannot count")


def test_an_admin_may_not_make_a_capped_owner_s_workload_uncountable(policy: Policy) -> None:
    counted = trainjob(numNodes=1, resourcesPerNode={"limits": {"nvidia.com/gpu": 8}})
    body = review(trainjob(), old=counted, operation="UPDATE", user="root", groups=ADMIN).body()
    d = run(policy, body, Facts(target=Target("alice", "vision", "intern", 8)))
    assert (d.allowed, d.rule) == (False, "unresolved-gpus")
    assert "its owner alice (role intern) has GPU caps" in d.reason
