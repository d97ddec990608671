"""The pure decision core: roles, scopes, limits and quotas, given the ledger's facts."""

from __future__ import annotations

from typing import Any

from conftest import ADMIN, INTERN, LEAD, RESEARCHER, delete_review, exec_review, make_job, make_pod, review

from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.decision import Action, Decision
from gateway.admission.policy import Policy
from gateway.admission.quota import Usage
from gateway.admission.review import parse_review


def run(policy: Policy, body: dict[str, Any], facts: Facts | None = None) -> Decision:
    return decide(prepare(parse_review(body), policy), policy, facts or Facts())


BOBS = Target(owner="bob", team="vision", role="researcher", gpus=64)


def test_intern_may_launch_within_limits(policy: Policy) -> None:
    d = run(policy, review(make_job(gpus=8).obj(), user="alice", groups=INTERN).body())
    assert d.allowed and d.action is Action.LAUNCH and d.gpus == 8
    assert d.reserve is not None and (d.reserve.owner, d.reserve.team, d.reserve.charged) == ("alice", "vision", True)


def test_per_workload_limits_by_role(policy: Policy) -> None:
    for groups, ok, too_big in ((INTERN, 8, 9), (RESEARCHER, 256, 257), (LEAD, 4096, 4097)):
        assert run(policy, review(make_job(gpus=ok).obj(), user="u", groups=groups).body()).allowed
        d = run(policy, review(make_job(gpus=too_big).obj(), user="u", groups=groups).body())
        assert not d.allowed and d.rule == "workload-gpu-limit"
    assert run(policy, review(make_job(gpus=4096).obj(), user="root", groups=ADMIN).body()).allowed
    # Beyond limits.yaml second_person.launch_over_gpus even an admin needs a second person.
    d = run(policy, review(make_job(gpus=100_000).obj(), user="root", groups=ADMIN).body())
    assert not d.allowed and d.rule == "second-person"


def test_concurrent_cap_uses_current_usage(policy: Policy) -> None:
    body = review(make_job(gpus=8).obj(), user="alice", groups=INTERN).body()
    assert run(policy, body, Facts(usage=Usage(user=8))).allowed
    d = run(policy, body, Facts(usage=Usage(user=9)))
    assert not d.allowed and d.rule == "user-quota"
    assert "9 are in use and this asks for 8 more" in d.reason


def test_interns_may_only_use_their_priority_classes(policy: Policy) -> None:
    job = make_job(gpus=1).obj()
    job["spec"]["template"]["spec"]["priorityClassName"] = "high"
    d = run(policy, review(job, user="alice", groups=INTERN).body())
    assert not d.allowed and d.rule == "priority-class"
    job["spec"]["template"]["spec"]["priorityClassName"] = "low"
    assert run(policy, review(job, user="alice", groups=INTERN).body()).allowed


def test_scopes_own_team_any(policy: Policy) -> None:
    job = make_job(gpus=8).named("research", "j").obj()
    kill = lambda user, groups: run(policy, delete_review(job, user=user, groups=groups).body(), Facts(target=BOBS))  # noqa: E731
    assert kill("bob", RESEARCHER).allowed
    assert not kill("alice", INTERN).allowed
    assert not kill("rita", RESEARCHER).allowed
    assert kill("lena", LEAD).allowed
    assert not kill("nate", ("gpu-leads", "team:nlp")).allowed
    assert kill("root", ADMIN).allowed
    assert not kill("mallory", ()).allowed


def test_exec_on_a_pod_the_gateway_never_admitted_is_not_governed(policy: Policy) -> None:
    d = run(policy, exec_review("research", "web-1", user="alice", groups=INTERN).body())
    assert d.allowed and not d.audited


def test_kill_of_an_unowned_gpu_workload_is_denied_to_interns_and_audited_for_others(policy: Policy) -> None:
    job = make_job(gpus=8).named("research", "old").obj()
    d = run(policy, delete_review(job, user="alice", groups=INTERN).body())
    assert not d.allowed and d.rule == "unowned-workload"
    d = run(policy, delete_review(job, user="bob", groups=RESEARCHER).body())
    assert d.allowed and d.audited


def _job_pod(owner_annotation: str = "mallory") -> dict[str, Any]:
    pod = make_pod(gpus=8).owned_by(owner_annotation, "nlp").obj()
    pod["metadata"]["uid"] = "pod-uid"
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                           "uid": "job-uid", "controller": True}]
    return pod


JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
BOBS_JOB = Target(owner="bob", team="vision", role="researcher", gpus=16, uid="job-uid", root_uid="job-uid",
                  shape='{"sets":[["/spec/template",2,8]]}')


def test_a_controllers_pod_belongs_to_its_parents_owner_in_the_ledger_not_to_its_annotations(policy: Policy) -> None:
    d = run(policy, review(_job_pod(), user=JOB_CONTROLLER, groups=()).body(), Facts(parent=BOBS_JOB, root=BOBS_JOB))
    assert d.allowed and d.reserve is not None
    assert (d.reserve.owner, d.reserve.team, d.reserve.charged) == ("bob", "vision", False)
    assert (d.reserve.uid, d.reserve.root_uid) == ("pod-uid", "job-uid")


def test_a_controllers_pod_must_fit_what_its_root_is_charged_for(policy: Policy) -> None:
    small = Target(owner="bob", team="vision", role="researcher", gpus=4, uid="job-uid", root_uid="job-uid",
                   shape='{"sets":[["/spec/template",1,4]]}')
    d = run(policy, review(_job_pod(), user=JOB_CONTROLLER, groups=()).body(), Facts(parent=small, root=small))
    assert not d.allowed and d.rule == "root-allowance"


def test_a_controller_may_create_only_its_kinds_and_only_for_a_parent(policy: Policy) -> None:
    pod = _job_pod()
    d = run(policy, review(pod, user="system:serviceaccount:kube-system:cronjob-controller", groups=()).body(),
            Facts(parent=BOBS_JOB, root=BOBS_JOB))
    assert not d.allowed and d.rule == "actor-scope" and "may not create Pod" in d.reason
    del pod["metadata"]["ownerReferences"]
    d = run(policy, review(pod, user=JOB_CONTROLLER, groups=()).body())
    assert not d.allowed and d.rule == "actor-scope" and "no controller ownerReference" in d.reason


def test_a_controllers_pod_for_a_parent_the_ledger_does_not_know_is_admitted_as_unowned(policy: Policy) -> None:
    d = run(policy, review(_job_pod(), user=JOB_CONTROLLER, groups=()).body())
    assert d.allowed and d.audited and d.rule == "unowned-workload"
    assert d.reserve is not None and d.reserve.owner == "" and d.reserve.charged is False


def test_service_accounts_are_not_actors_by_wildcard(policy: Policy) -> None:
    for user in ("system:serviceaccount:kube-system:default", "system:serviceaccount:default:kuberay-operator"):
        d = run(policy, review(_job_pod(), user=user, groups=()).body(), Facts(parent=BOBS_JOB, root=BOBS_JOB))
        assert not d.allowed and d.rule == "no-role"


def test_kubelets_may_delete_pods_they_run(policy: Policy) -> None:
    pod = make_pod(gpus=8).named("research", "p").obj()
    d = run(policy, delete_review(pod, user="system:node:gpu-node-17", groups=("system:nodes",)).body(),
            Facts(target=BOBS))
    assert d.allowed and d.release


def test_a_modify_that_grows_a_workload_checks_limits_and_quota_on_the_new_total(policy: Policy) -> None:
    old = make_job(gpus=8, parallelism=8).named("research", "j").obj()
    new = make_job(gpus=8, parallelism=40).named("research", "j").obj()
    body = review(new, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    d = run(policy, body, Facts(target=BOBS, usage=Usage(user=1000)))
    assert not d.allowed and d.rule == "workload-gpu-limit"
    new = make_job(gpus=8, parallelism=16).named("research", "j").obj()
    body = review(new, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    d = run(policy, body, Facts(target=BOBS, usage=Usage(user=1000)))
    assert not d.allowed and d.rule == "user-quota"
    d = run(policy, body, Facts(target=BOBS, usage=Usage(user=0)))
    assert d.allowed and d.reserve is not None and d.reserve.gpus == 128


def test_a_shrinking_modify_is_allowed_even_over_cap(policy: Policy) -> None:
    old = make_job(gpus=8, parallelism=8).named("research", "j").obj()
    new = make_job(gpus=8, parallelism=2).named("research", "j").obj()
    body = review(new, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    assert run(policy, body, Facts(target=BOBS, usage=Usage(user=5000))).allowed


def test_a_user_with_several_roles_gets_the_most_privileged(policy: Policy) -> None:
    ident = policy.identity("x", ("gpu-interns", "gpu-leads"))
    assert ident.role == "lead"


def test_default_team_is_the_first_in_sorted_order(policy: Policy) -> None:
    groups = ("gpu-interns", "team:zeta", "team:alpha")
    d = run(policy, review(make_job(gpus=1).obj(), user="alice", groups=groups).body())
    assert d.team == "alpha"
