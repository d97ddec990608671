"""DRA GPUs in the pure decision (gateway/admission/claims.py): counted from the ledger's records of
the claims and templates a workload's pods name, before any cap is checked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from builders_dra import claim, exactly, gpu_template, naming, validated
from conftest import ADMIN, INTERN, RESEARCHER, make_deployment, make_job, review

from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.decision import Decision
from gateway.admission.dra import claim_shape
from gateway.admission.gates import queue_mode
from gateway.admission.mutation import ownership_patch
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review
from gateway.admission.scheduling_settings import OverQuota
from gateway.admission.unblocked import asks_for_gpus
from gateway.whatif import run_check

TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
CLAIMS = "resourceclaims.resource.k8s.io"


def recorded(gpus: int, owner: str = "bob") -> Target:
    return Target(owner, "vision", "researcher", 0, charged=False, shape=claim_shape(gpus))


def ledger(**templates: int) -> Facts:
    return Facts(references={(TEMPLATES, "research", name): recorded(n) for name, n in templates.items()})


def deployment(replicas: int, *, templates: tuple[str, ...] = (), claims: tuple[str, ...] = (),
               gpus: int = 0) -> dict[str, Any]:
    dep = make_deployment(gpus=gpus, replicas=replicas).named("research", "serve").obj()
    dep["spec"]["strategy"] = {"type": "Recreate"}
    naming(dep["spec"]["template"]["spec"], templates=templates, claims=claims)
    return validated(dep)


def run(policy: Policy, obj: dict[str, Any], facts: Facts, groups: tuple[str, ...] = RESEARCHER,
        **kw: Any) -> Decision:
    return decide(prepare(parse_review(review(obj, user="bob", groups=groups, **kw).body()), policy), policy, facts)


def test_the_plan_asks_the_ledger_for_the_claims_its_pods_name(policy: Policy) -> None:
    plan = prepare(parse_review(review(deployment(2, templates=("a", "b"), claims=("c",)), user="bob",
                                       groups=RESEARCHER).body()), policy)
    assert plan.early is None
    assert set(plan.reference_keys) == {(TEMPLATES, "research", "a"), (TEMPLATES, "research", "b"),
                                        (CLAIMS, "research", "c")}


def test_templates_count_per_pod_and_shared_claims_once(policy: Policy) -> None:
    facts = Facts(references={(TEMPLATES, "research", "gpu-x2"): recorded(2),
                              (CLAIMS, "research", "pool"): recorded(8)})
    d = run(policy, deployment(5, templates=("gpu-x2",), claims=("pool",), gpus=1), facts)
    assert d.allowed and d.gpus == 5 * (1 + 2) + 8
    assert "5 pods x 2 GPUs of ResourceClaimTemplate gpu-x2 + 1 nvidia.com/gpu" in d.reason
    assert "8 GPUs of ResourceClaim pool shared by its pods" in d.reason
    assert d.reserve is not None and d.reserve.gpus == 23


def test_a_claim_without_gpus_leaves_a_workload_without_gpus(policy: Policy) -> None:
    d = run(policy, deployment(50, templates=("nic",)), ledger(nic=0), groups=INTERN)
    assert d.allowed and d.reserve is None and not d.audited


def test_unknown_claims_are_unresolved_for_capped_roles_only(policy: Policy) -> None:
    d = run(policy, deployment(1, templates=("legacy",)), Facts(), groups=INTERN)
    assert (d.allowed, d.rule) == (False, "unresolved-gpus")
    d = run(policy, deployment(1, templates=("legacy",)), Facts(), groups=ADMIN)
    assert d.allowed and d.audited and "plus GPUs it cannot count" in d.reason


def test_an_update_growing_a_recorded_workload_through_a_template_is_checked_against_caps(policy: Policy) -> None:
    old = deployment(2, templates=("small",))
    new = deployment(2, templates=("big",))
    target = Target("bob", "vision", "researcher", 2, shape='{"sets":[["/spec/template",2,1]]}')
    facts = replace(ledger(small=1, big=200), target=target)
    d = run(policy, new, facts, operation="UPDATE", old=old)
    assert (d.allowed, d.rule) == (False, "workload-gpu-limit") and "asks for 400" in d.reason


def test_claim_workloads_are_stamped_and_fail_closed_but_never_queued(policy: Policy) -> None:
    plan = prepare(parse_review(review(deployment(1, templates=("t",)), user="bob", groups=RESEARCHER).body()), policy)
    ops = ownership_patch(plan)
    assert any(op["path"] == "/spec/template/metadata/annotations" for op in ops)
    assert asks_for_gpus(plan)
    queueing = replace(policy, scheduling=replace(policy.scheduling, over_quota=OverQuota.QUEUE))
    with_gpus = prepare(parse_review(review(deployment(1, templates=("t",), gpus=1), user="bob",
                                            groups=RESEARCHER).body()), queueing)
    plain = prepare(parse_review(review(deployment(1, gpus=1), user="bob", groups=RESEARCHER).body()), queueing)
    assert queue_mode(plain, queueing) and not queue_mode(with_gpus, queueing)


def test_a_claim_a_person_creates_is_let_through_a_store_fault_but_a_controllers_is_not(policy: Policy) -> None:
    person = prepare(parse_review(review(claim("c", exactly()), user="bob", groups=RESEARCHER).body()), policy)
    assert person.data_kind == "ResourceClaim" and not asks_for_gpus(person)
    made = claim("c", exactly())
    made["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1",
                                            "controller": True}]
    controller = prepare(parse_review(review(made, user="system:serviceaccount:kube-system:resource-claim-controller",
                                             groups=("system:serviceaccounts",)).body()), policy)
    assert controller.parent is not None and controller.parent.uid == "u1" and asks_for_gpus(controller)


def test_check_counts_the_templates_of_the_same_input(policy: Policy) -> None:
    job = make_job(gpus=0, parallelism=4).named("research", "train").obj()
    naming(job["spec"]["template"]["spec"], templates=("gpu-x4",))
    [template, result] = run_check([gpu_template("gpu-x4", 4), job], policy=policy, user="alice", groups=INTERN)
    assert template["allowed"] and template["gpus"] == 4
    assert not result["allowed"] and result["rule"] == "workload-gpu-limit" and result["gpus"] == 16
    [alone] = run_check([job], policy=policy, user="alice", groups=INTERN)
    assert alone["rule"] == "unresolved-gpus"
