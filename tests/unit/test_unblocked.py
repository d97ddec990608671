"""Which requests a store fault may refuse: only those that may concern GPUs."""

from __future__ import annotations

from conftest import RESEARCHER, delete_review, exec_review, make_deployment, make_job, make_pod, review
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission.admission import prepare
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review
from gateway.admission.unblocked import asks_for_gpus


@given(gpus=st.integers(min_value=0, max_value=64), parallelism=st.integers(min_value=1, max_value=8))
def test_a_workload_asks_for_gpus_exactly_when_its_pods_do(policy: Policy, gpus: int, parallelism: int) -> None:
    job = make_job(gpus=gpus, parallelism=parallelism).named("research", "j").obj()
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]
    plan = prepare(parse_review(review(job, groups=RESEARCHER).body()), policy)
    assert plan.early is None  # it mounts a claim: the ledger is needed even without GPUs
    assert asks_for_gpus(plan) is (gpus > 0)


@given(old_gpus=st.integers(min_value=0, max_value=16))
def test_a_delete_or_a_modify_concerns_gpus_when_the_old_object_had_some(policy: Policy, old_gpus: int) -> None:
    old = make_deployment(gpus=old_gpus).named("research", "d").obj()
    delete = prepare(parse_review(delete_review(old, user="bob", groups=RESEARCHER).body()), policy)
    assert asks_for_gpus(delete) is (old_gpus > 0)
    new = make_deployment(gpus=0).named("research", "d").obj()
    new["spec"]["template"]["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]
    modify = prepare(parse_review(review(new, old=old, operation="UPDATE", user="bob", groups=RESEARCHER).body()),
                     policy)
    assert asks_for_gpus(modify) is (old_gpus > 0)


def test_data_objects_never_and_pod_subresources_always_take_the_failure_policy(policy: Policy) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "research"}}
    assert asks_for_gpus(prepare(parse_review(review(configmap, groups=RESEARCHER).body()), policy)) is False
    exec_plan = prepare(parse_review(exec_review("research", "p", user="bob", groups=RESEARCHER).body()), policy)
    assert asks_for_gpus(exec_plan) is True  # no pod template: the ledger alone knows
    pod = make_pod(gpus=2).named("research", "p").obj()
    assert asks_for_gpus(prepare(parse_review(review(pod, groups=RESEARCHER).body()), policy)) is True
