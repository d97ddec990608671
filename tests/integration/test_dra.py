"""GPUs pods get through Dynamic Resource Allocation, charged like any other: through the real
service and store, as a cluster drives it (tests/cluster_sim.py: mutate, apply the patch,
validate; controllers make children under their own identity with ownerReferences).

The claims and templates are `resource.k8s.io/v1` objects (Kubernetes 1.34) checked strictly
against the API's schema (tests/builders_dra.py); the resourceclaim controller's claims are
made as pkg/controller/resourceclaim makes them: the template's metadata and spec copied, a
controller ownerReference to the pod, and the pod's claim entry in an annotation.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from builders_dra import claim, claim_template, exactly, gpu_template, naming, validated
from cluster_sim import GC, JOB_CONTROLLER, REPLICASET_CONTROLLER, SYSTEM, Answer, Cluster
from conftest import ADMIN, INTERN, RESEARCHER, container, make_deployment, make_job, make_pod

from gateway.admission.dra import POD_CLAIM_ANNOTATION
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

RESOURCE_CLAIM_CONTROLLER = "system:serviceaccount:kube-system:resource-claim-controller"
OTTO = ("gpu-researchers", "team:audio")


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def held(store: SQLiteStore) -> dict[str, int]:
    return {user: gpus for user, gpus in store.gpus_by_user().items() if gpus}


def row(store: SQLiteStore, name: str) -> Any:
    [found] = [r for r in store.reservations() if r.name == name]
    return found


def deployment(name: str, replicas: int, *, templates: tuple[str, ...] = (), claims: tuple[str, ...] = (),
               gpus: int = 0) -> dict[str, Any]:
    """A Deployment whose pods get their GPUs through DRA (and `gpus` device-plugin GPUs each).
    Recreate: no rolling-update surge, so the counts stay simple."""
    dep = make_deployment(gpus=gpus, replicas=replicas).named("research", name).obj()
    dep["spec"]["strategy"] = {"type": "Recreate"}
    naming(dep["spec"]["template"]["spec"], templates=templates, claims=claims)
    return validated(dep)


def pod(name: str, *, templates: tuple[str, ...] = (), claims: tuple[str, ...] = (), gpus: int = 0) -> dict[str, Any]:
    obj = make_pod(gpus=gpus).named("research", name).obj()
    naming(obj["spec"], templates=templates, claims=claims)
    return validated(obj)


def claim_for(cluster: Cluster, owner_pod: dict[str, Any], entry: str = "t0") -> Answer:
    """The resourceclaim controller's claim for the pod's claim `entry`, from its template."""
    [ref] = [e for e in owner_pod["spec"]["resourceClaims"] if e["name"] == entry]
    template = cluster.get("ResourceClaimTemplate", ref["resourceClaimTemplateName"])
    meta = copy.deepcopy(template["spec"].get("metadata") or {})
    meta.setdefault("annotations", {})[POD_CLAIM_ANNOTATION] = entry
    made = cluster.child(owner_pod, "resource.k8s.io/v1", "ResourceClaim", {"metadata": meta},
                         copy.deepcopy(template["spec"]["spec"]), RESOURCE_CLAIM_CONTROLLER)
    if made.allowed:
        validated({k: v for k, v in made.obj.items()})
    return made


def run_deployment(cluster: Cluster, dep: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployment and replicaset controllers: a ReplicaSet, then its pods; the pods' claims."""
    stored = cluster.get("Deployment", dep["metadata"]["name"])
    rs = cluster.replicaset_of(stored, stored["spec"]["replicas"])
    assert rs.allowed, rs.message
    pods = []
    for _ in range(stored["spec"]["replicas"]):
        made = cluster.pod_of(rs.obj, rs.obj["spec"]["template"], REPLICASET_CONTROLLER)
        assert made.allowed, made.message
        pods.append(made.obj)
    return pods


# ------------------------------------------------------------------ counting


def test_an_interns_deployment_of_four_pods_with_a_four_gpu_template_is_denied(cluster, store):
    assert cluster.create(gpu_template("gpu-x4", 4), "alice", INTERN).allowed
    made = cluster.create(deployment("serve", 4, templates=("gpu-x4",)), "alice", INTERN)
    assert not made.allowed
    assert made.message == (
        "gpu-gateway: denied launch of Deployment research/serve: user alice (role intern) may launch at most 8 "
        "GPUs per workload; this one asks for 16 (4 pods x 4 GPUs of ResourceClaimTemplate gpu-x4). "
        "Ask for an exception (gpuctl request launch Deployment research/serve --gpus 16 --reason ...): "
        "a lead in team vision (group gpu-leads) or an admin (group gpu-admins) may approve it.")
    assert held(store) == {}


def test_a_researchers_deployment_is_charged_every_pods_template_gpus(cluster, store):
    template = cluster.create(gpu_template("gpu-x4", 4), "bob", RESEARCHER)
    assert template.allowed
    assert template.obj["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"  # stamped like a PVC
    assert (row(store, "gpu-x4").owner, row(store, "gpu-x4").extra["dra_gpus"]) == ("bob", 4)
    made = cluster.create(deployment("serve", 4, templates=("gpu-x4",)), "bob", RESEARCHER)
    assert made.allowed, made.message
    assert made.obj["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"
    assert held(store) == {"bob": 16}
    serve = row(store, "serve")
    assert (serve.gpus, serve.charged) == (16, True)

    pods = run_deployment(cluster, made.obj)
    for p in pods:
        made_claim = claim_for(cluster, p)
        assert made_claim.allowed, made_claim.message
        record = row(store, made_claim.obj["metadata"]["name"])
        assert (record.owner, record.charged, record.extra["dra_gpus"]) == ("bob", False, 4)
    assert held(store) == {"bob": 16}  # the pods and their claims are charged with the Deployment

    scaled = cluster.scale("Deployment", "serve", 8, "bob", RESEARCHER)
    assert scaled.allowed and held(store) == {"bob": 32}


def test_a_deployment_surge_counts_its_template_gpus_too(cluster, store):
    assert cluster.create(gpu_template("gpu-x2", 2), "bob", RESEARCHER).allowed
    dep = deployment("serve", 4, templates=("gpu-x2",))
    del dep["spec"]["strategy"]  # RollingUpdate with maxSurge 25%: one more pod
    assert cluster.create(dep, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 10}


def test_all_devices_counts_as_the_policy_states(cluster, store):
    assert cluster.create(claim_template("whole-node", exactly("gpu.nvidia.com", mode="All")), "bob",
                          RESEARCHER).allowed
    assert row(store, "whole-node").extra["dra_gpus"] == 8
    assert cluster.create(deployment("nodes", 3, templates=("whole-node",)), "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 24}
    assert cluster.create(claim_template("whole-node", exactly("gpu.nvidia.com", mode="All")), "alice",
                          INTERN).allowed is False  # the name is bob's
    assert cluster.create(claim_template("mine", exactly("gpu.nvidia.com", mode="All")), "alice", INTERN).allowed
    assert cluster.create(pod("one-node", templates=("mine",)), "alice", INTERN).allowed  # 8: her cap
    assert not cluster.create(pod("two-nodes", templates=("mine", "mine")), "alice", INTERN).allowed


def test_a_shared_claim_counts_once_for_the_workload(cluster, store):
    assert cluster.create(claim("shared-gpus", exactly("gpu.nvidia.com", 4)), "bob", RESEARCHER).allowed
    assert cluster.create(gpu_template("gpu-x1", 1), "bob", RESEARCHER).allowed
    made = cluster.create(deployment("serve", 4, templates=("gpu-x1",), claims=("shared-gpus",)), "bob", RESEARCHER)
    assert made.allowed, made.message
    assert held(store) == {"bob": 4 * 1 + 4}
    assert len(run_deployment(cluster, made.obj)) == 4  # each pod fits what the Deployment is charged for
    assert cluster.scale("Deployment", "serve", 6, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 6 * 1 + 4}  # the shared claim stays counted once


def test_device_plugin_and_dra_gpus_add_up(cluster, store):
    assert cluster.create(gpu_template("gpu-x2", 2), "alice", INTERN).allowed
    assert cluster.create(pod("mixed", templates=("gpu-x2",), gpus=4), "alice", INTERN).allowed
    assert held(store) == {"alice": 6}
    denied = cluster.create(pod("more", templates=("gpu-x2", "gpu-x2"), gpus=8), "alice", INTERN)
    assert not denied.allowed
    assert "asks for 12 (1 pod x 4 GPUs of ResourceClaimTemplate gpu-x2 + 8 nvidia.com/gpu)" in denied.message


def test_a_device_class_that_is_not_a_gpu_counts_zero(cluster, store):
    assert cluster.create(claim_template("nic", exactly("nic.example.com", 2)), "alice", INTERN).allowed
    assert row(store, "nic").extra["dra_gpus"] == 0
    made = cluster.create(deployment("web", 20, templates=("nic",)), "alice", INTERN)
    assert made.allowed, made.message
    assert held(store) == {}
    assert "web" not in {r.name for r in store.reservations()}  # no GPUs: not a GPU workload
    pods = run_deployment(cluster, made.obj)
    assert claim_for(cluster, pods[0]).allowed  # a claim without GPUs, for a pod the ledger need not know


# ------------------------------------------------------------------ what the ledger does not know


def test_a_claim_the_ledger_does_not_know_is_denied_to_an_intern_with_the_reason(cluster, store):
    cluster.objects[("ResourceClaimTemplate", "research", "legacy")] = gpu_template("legacy", 4)  # before the gateway
    made = cluster.create(deployment("serve", 1, templates=("legacy",)), "alice", INTERN)
    assert not made.allowed
    assert made.message == (
        "gpu-gateway: denied launch of Deployment research/serve: user alice (role intern) has GPU caps, so the "
        "gateway must count every GPU, and Deployment research/serve names ResourceClaimTemplate legacy, which the "
        "gateway has no record of (created before the gateway was installed), so the GPUs its pods get through DRA "
        "cannot be counted; create a new one (the gateway records its GPUs) and name it instead. Make its GPUs "
        "countable as said (for a kind of your own, register it in limits.yaml workload_kinds, see README), or ask "
        "an administrator to launch it.")
    audit = [r for r in store.audit_rows() if r["name"] == "serve"]
    assert [(r["rule"], r["decision"]) for r in audit] == [("unresolved-gpus", "denied")]


def test_an_admin_may_launch_it_audited(cluster, store):
    made = cluster.create(pod("probe", claims=("legacy-shared",)), "root", ADMIN)
    assert made.allowed
    [record] = [r for r in store.audit_rows() if r["name"] == "probe"]
    assert record["decision"] == "allowed" and "plus GPUs it cannot count" in record["reason"]


def test_an_update_that_keeps_an_unknown_claim_is_not_denied_for_it(cluster, store):
    made = cluster.create(deployment("serve", 1, templates=("legacy",), gpus=1), "root", ADMIN)
    assert made.allowed
    dep = cluster.get("Deployment", "serve")
    dep["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert cluster.update(dep, "root", ADMIN).allowed


# ------------------------------------------------------------------ changing claims and templates


def test_a_template_may_not_be_updated_to_ask_for_more_gpus(cluster, store):
    assert cluster.create(gpu_template("gpu-x1", 1), "alice", INTERN).allowed
    assert cluster.create(deployment("serve", 8, templates=("gpu-x1",)), "alice", INTERN).allowed
    bigger = cluster.get("ResourceClaimTemplate", "gpu-x1")
    bigger["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] = 8
    refused = cluster.update(validated(bigger), "alice", INTERN)
    assert not refused.allowed
    assert refused.message == (
        "gpu-gateway: denied modify of ResourceClaimTemplate research/gpu-x1: ResourceClaimTemplate research/gpu-x1 "
        "would ask for 8 GPUs; it asked for 1, and the workloads that name it were counted with 1. Create a new "
        "ResourceClaimTemplate or ResourceClaim with the devices you need and reference that one instead.")
    same = cluster.get("ResourceClaimTemplate", "gpu-x1")
    same["metadata"].setdefault("labels", {})["tier"] = "small"
    assert cluster.update(same, "alice", INTERN).allowed


def test_only_the_owner_their_lead_or_an_admin_may_change_or_delete_a_template(cluster, store):
    assert cluster.create(gpu_template("gpu-x1", 1), "bob", RESEARCHER).allowed
    template = cluster.get("ResourceClaimTemplate", "gpu-x1")
    template["metadata"].setdefault("labels", {})["x"] = "y"
    denied = cluster.update(template, "otto", OTTO)
    assert not denied.allowed and "belongs to bob (team vision)" in denied.message
    assert not cluster.delete("ResourceClaimTemplate", "gpu-x1", "otto", OTTO).allowed
    assert cluster.delete("ResourceClaimTemplate", "gpu-x1", "bob", RESEARCHER).allowed
    assert "gpu-x1" not in {r.name for r in store.reservations()}


# ------------------------------------------------------------------ the resourceclaim controller


def test_a_claim_from_a_template_replaced_after_the_pod_was_admitted_is_refused(cluster, store):
    """The template is deleted and made again larger between the pod's admission and its claim."""
    assert cluster.create(gpu_template("gpu-x1", 1), "alice", INTERN).allowed
    job = make_job(gpus=0, parallelism=1).named("research", "train").obj()
    naming(job["spec"]["template"]["spec"], templates=("gpu-x1",))
    made = cluster.create(validated(job), "alice", INTERN)
    assert made.allowed and held(store) == {"alice": 1}
    worker = cluster.pod_of(made.obj, made.obj["spec"]["template"], JOB_CONTROLLER)
    assert worker.allowed, worker.message

    assert cluster.delete("ResourceClaimTemplate", "gpu-x1", "alice", INTERN).allowed
    assert cluster.create(gpu_template("gpu-x1", 8), "alice", INTERN).allowed
    refused = claim_for(cluster, worker.obj)
    assert not refused.allowed
    assert "would hold 8 GPUs; the pod was counted for 1 with it" in refused.message
    assert held(store) == {"alice": 1}


def test_a_new_pod_of_a_workload_counts_the_template_as_it_is_now(cluster, store):
    assert cluster.create(gpu_template("gpu-x1", 1), "alice", INTERN).allowed
    made = cluster.create(deployment("serve", 2, templates=("gpu-x1",)), "alice", INTERN)
    assert made.allowed
    assert cluster.delete("ResourceClaimTemplate", "gpu-x1", "alice", INTERN).allowed
    assert cluster.create(gpu_template("gpu-x1", 8), "alice", INTERN).allowed
    rs = cluster.replicaset_of(made.obj, 2)
    assert not rs.allowed and "would hold 16 GPUs" in rs.message  # more than the 2 it was charged for


def test_a_pod_made_while_its_template_is_unknown_is_refused_for_a_capped_owner(cluster, store):
    assert cluster.create(gpu_template("gpu-x1", 1), "alice", INTERN).allowed
    made = cluster.create(deployment("serve", 1, templates=("gpu-x1",)), "alice", INTERN)
    rs = cluster.replicaset_of(made.obj, 1)
    assert rs.allowed
    assert cluster.delete("ResourceClaimTemplate", "gpu-x1", "alice", INTERN).allowed
    worker = cluster.pod_of(rs.obj, rs.obj["spec"]["template"], REPLICASET_CONTROLLER)
    assert not worker.allowed
    assert "its owner alice (role intern) has GPU caps" in worker.message
    assert "names ResourceClaimTemplate gpu-x1, which the gateway has no record of" in worker.message


def test_a_gpu_claim_for_a_pod_the_ledger_does_not_know_is_refused(cluster, store):
    assert cluster.create(claim_template("nic", exactly("nic.example.com", 1)), "alice", INTERN).allowed
    made = cluster.create(pod("web", templates=("nic",)), "alice", INTERN)
    assert made.allowed  # no GPUs: not recorded
    assert cluster.delete("ResourceClaimTemplate", "nic", "alice", INTERN).allowed
    assert cluster.create(gpu_template("nic", 8), "alice", INTERN).allowed  # the same name, now GPUs
    refused = claim_for(cluster, made.obj)
    assert not refused.allowed
    assert "asks for 8 GPUs and is made for Pod web, which the gateway's ledger does not know" in refused.message


def test_generated_claims_are_deleted_by_controllers_and_kept_from_others(cluster, store):
    assert cluster.create(gpu_template("gpu-x2", 2), "bob", RESEARCHER).allowed
    made = cluster.create(pod("train", templates=("gpu-x2",)), "bob", RESEARCHER)
    assert made.allowed and held(store) == {"bob": 2}
    generated = claim_for(cluster, made.obj)
    assert generated.allowed
    name = generated.obj["metadata"]["name"]
    assert not cluster.delete("ResourceClaim", name, "otto", OTTO).allowed
    assert cluster.delete("ResourceClaim", name, GC, SYSTEM).allowed
    assert name not in {r.name for r in store.reservations()}


def test_the_scheduler_may_add_its_finalizer_to_a_claim(cluster, store):
    assert cluster.create(claim("shared-gpus", exactly("gpu.nvidia.com", 2)), "bob", RESEARCHER).allowed
    stored = cluster.get("ResourceClaim", "shared-gpus")
    stored["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    assert cluster.update(stored, "system:kube-scheduler", ()).allowed


# ------------------------------------------------------------------ a pod template with init containers


def test_a_pod_set_with_no_container_gpus_but_a_template_is_a_gpu_workload(cluster, store):
    assert cluster.create(gpu_template("gpu-x4", 4), "bob", RESEARCHER).allowed
    dep = deployment("parked", 0, templates=("gpu-x4",))
    dep["spec"]["template"]["spec"]["initContainers"] = [container(0, name="init")]
    made = cluster.create(dep, "bob", RESEARCHER)
    assert made.allowed
    assert (row(store, "parked").gpus, row(store, "parked").charged) == (0, True)  # recorded at size zero
    assert not cluster.scale("Deployment", "parked", 100, "bob", RESEARCHER).allowed  # 400 > 256
    assert cluster.scale("Deployment", "parked", 2, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 8}
