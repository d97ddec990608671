"""Who acts for whom: every GPU charged to one person, whoever's identity makes the request.

Each test drives the real AdmissionService through `/mutate` then `/validate` as a cluster
would (tests/cluster_sim.py): people submit workloads, and controllers make the children the
real ones make (identity, controller ownerReference with the parent's UID, template copied).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cluster_sim import (
    CRONJOB_CONTROLLER,
    DEPLOYMENT_CONTROLLER,
    GC,
    HPA,
    JOB_CONTROLLER,
    KUBERAY,
    REPLICASET_CONTROLLER,
    SYSTEM,
    TRAINING_OPERATOR,
    Cluster,
)
from conftest import ADMIN, INTERN, RESEARCHER, container, make_deployment, make_pod, make_pytorchjob

from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

EVE = ("gpu-interns", "team:vision")  # an intern in bob's team


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def held(store: SQLiteStore) -> dict[str, int]:
    """Charged GPUs per user holding any."""
    return {user: gpus for user, gpus in store.gpus_by_user().items() if gpus}


def audit(store: SQLiteStore) -> list[dict[str, Any]]:
    return list(store.audit_rows())


def deployment(name: str, *, gpus: int = 8, replicas: int = 1, surge: int | None = 0) -> dict[str, Any]:
    dep = make_deployment(gpus=gpus, replicas=replicas).named("research", name).obj()
    if surge is not None:
        dep["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": 1}}
    return dep


def cronjob(name: str, gpus: int = 8) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": "research"},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "jobTemplate": {"spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [container(gpus)]}}}}}}


# ------------------------------------------------------------------ workloads created at size zero


def test_a_deployment_created_at_zero_replicas_is_recorded_and_its_scale_up_is_decided(cluster, store):
    made = cluster.create(deployment("parked", replicas=0), "alice", INTERN)
    assert made.allowed
    ann = made.obj["metadata"]["annotations"]
    assert ann["gpu-gateway.io/owner"] == "alice"
    assert made.obj["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "alice"
    [row] = store.reservations()
    assert (row.owner, row.gpus, row.charged) == ("alice", 0, True)

    scaled = cluster.scale("Deployment", "parked", 100, "alice", INTERN)
    assert not scaled.allowed and "may run at most 8 GPUs per workload; this scale asks for 800" in scaled.message
    assert cluster.scale("Deployment", "parked", 1, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}
    assert cluster.scale("Deployment", "parked", 2, "alice", INTERN).allowed is False  # 16 > 8 per workload
    [*_, last] = audit(store)
    assert (last["user"], last["owner"], last["decision"]) == ("alice", "alice", "denied")


def test_nobody_else_may_edit_scale_or_delete_a_parked_gpu_workload(cluster, store):
    assert cluster.create(deployment("parked", replicas=0), "bob", RESEARCHER).allowed
    assert not cluster.scale("Deployment", "parked", 4, "eve", EVE).allowed
    edited = cluster.get("Deployment", "parked")
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/eve/evil:1"
    answer = cluster.update(edited, "eve", EVE)
    assert not answer.allowed and "belongs to bob" in answer.message
    assert not cluster.delete("Deployment", "parked", "eve", EVE).allowed
    assert cluster.delete("Deployment", "parked", "bob", RESEARCHER).allowed
    assert store.reservations() == []


def test_a_person_without_a_gpu_role_may_not_park_a_gpu_workload(cluster):
    answer = cluster.create(deployment("parked", replicas=0), "mallory", ())
    assert not answer.allowed and "may not launch GPU workloads" in answer.message


def test_a_suspended_job_is_charged_when_resumed_against_the_owners_caps(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "later", "namespace": "research"},
           "spec": {"suspend": True, "parallelism": 4, "template": {"spec": {
               "restartPolicy": "Never", "containers": [container(8)]}}}}
    assert cluster.create(job, "alice", INTERN).allowed
    assert held(store) == {}
    resumed = cluster.get("Job", "later")
    resumed["spec"]["suspend"] = False
    kueue = "system:serviceaccount:kueue-system:kueue-controller-manager"
    answer = cluster.update(resumed, kueue, SYSTEM)
    assert not answer.allowed and "user alice (role intern) may run at most 8 GPUs" in answer.message
    resumed["spec"]["parallelism"] = 1
    assert cluster.update(resumed, kueue, SYSTEM).allowed
    assert held(store) == {"alice": 8}


# ------------------------------------------------------------------ autoscalers and controllers


def test_the_hpa_scaling_a_deployment_is_decided_against_the_owners_caps(cluster, store):
    assert cluster.create(deployment("web"), "alice", INTERN).allowed
    answer = cluster.scale("Deployment", "web", 100, HPA, SYSTEM)
    assert not answer.allowed and "user alice (role intern) may run at most 8 GPUs per workload" in answer.message
    assert held(store) == {"alice": 8}
    [*_, last] = audit(store)
    assert (last["user"], last["owner"], last["rule"]) == (HPA, "alice", "workload-gpu-limit")

    assert cluster.create(deployment("serve"), "bob", RESEARCHER).allowed
    assert cluster.scale("Deployment", "serve", 4, HPA, SYSTEM).allowed
    assert held(store) == {"alice": 8, "bob": 32}
    [*_, last] = audit(store)
    assert (last["user"], last["owner"], last["decision"], last["gpus"]) == (HPA, "bob", "allowed", 32)


def test_the_hpa_scale_counts_the_rolling_update_surge(cluster, store):
    assert cluster.create(deployment("serve", surge=None), "bob", RESEARCHER).allowed  # 1 + 1 surge
    assert held(store) == {"bob": 16}
    assert cluster.scale("Deployment", "serve", 8, HPA, SYSTEM).allowed  # 8 + 2 surge
    assert held(store) == {"bob": 80}


def test_deployment_to_replicaset_to_pod_is_charged_once_to_the_deployments_owner(cluster, store):
    dep = cluster.create(deployment("serve", replicas=2), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=2)
    assert rs.allowed
    for _ in range(2):
        pod = cluster.pod_of(rs.obj, rs.obj["spec"]["template"], REPLICASET_CONTROLLER,
                             labels={"pod-template-hash": rs.obj["metadata"]["labels"]["pod-template-hash"]})
        assert pod.allowed
    rows = {r.resource: r for r in store.reservations() if r.resource != "pods"}
    pods = [r for r in store.reservations() if r.resource == "pods"]
    assert len(pods) == 2 and all((p.owner, p.charged) == ("bob", False) for p in pods)
    assert rows["replicasets.apps"].owner == "bob" and rows["replicasets.apps"].charged is False
    assert held(store) == {"bob": 16}
    # the owner's pods are theirs for exec and kill, whatever the pod's annotations say
    pod_name = pods[0].name
    assert not cluster.delete("Pod", pod_name, "eve", EVE).allowed


def test_a_controllers_child_owner_comes_from_the_ledger_not_from_its_annotations(cluster, store):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    template = copy.deepcopy(dep["spec"]["template"])
    template["metadata"]["annotations"]["gpu-gateway.io/owner"] = "mallory"
    rs = cluster.child(dep, "apps/v1", "ReplicaSet", template, {"replicas": 1, "template": template},
                       DEPLOYMENT_CONTROLLER, name="serve-abc")
    assert rs.allowed
    assert {r.name: r.owner for r in store.reservations()}["serve-abc"] == "bob"


def test_a_controller_may_not_make_more_than_the_root_is_charged_for(cluster):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    big = cluster.replicaset_of(dep, replicas=100)
    assert not big.allowed and "would hold 800 GPUs" in big.message and "charged for 8" in big.message
    rs = cluster.replicaset_of(dep, replicas=1)
    assert rs.allowed
    # the deployment controller growing the ReplicaSet past the Deployment's charge
    grown = cluster.get("ReplicaSet", rs.obj["metadata"]["name"])
    grown["spec"]["replicas"] = 50
    assert not cluster.update(grown, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    # a pod with more GPUs than any pod of the root
    fat = copy.deepcopy(rs.obj["spec"]["template"])
    fat["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 16
    answer = cluster.pod_of(rs.obj, fat, REPLICASET_CONTROLLER)
    assert not answer.allowed and answer.message.count("GPUs") >= 1


def test_a_person_growing_a_controllers_replicaset_is_held_to_the_deployments_charge(cluster):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    rs["spec"]["replicas"] = 30
    answer = cluster.update(rs, "bob", RESEARCHER)
    assert not answer.allowed and "Scale or change the workload the gateway admitted" in answer.message


def test_after_the_hpa_scales_the_root_its_controllers_may_grow_the_children(cluster, store):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    assert cluster.scale("Deployment", "serve", 3, HPA, SYSTEM).allowed
    rs["spec"]["replicas"] = 3
    assert cluster.update(rs, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    for _ in range(3):
        assert cluster.pod_of(rs, rs["spec"]["template"], REPLICASET_CONTROLLER).allowed
    assert held(store) == {"bob": 24}


def test_a_controllers_pod_for_a_parent_the_ledger_does_not_know_is_admitted_as_unowned_and_audited(cluster, store):
    old_rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": "legacy", "namespace": "research", "uid": "from-before-the-gateway"},
              "spec": {"replicas": 1, "template": {"spec": {"containers": [container(8)]}}}}
    answer = cluster.pod_of(old_rs, old_rs["spec"]["template"], REPLICASET_CONTROLLER)
    assert answer.allowed
    [row] = audit(store)
    assert row["rule"] == "unowned-workload" and row["user"] == REPLICASET_CONTROLLER
    [record] = store.reservations()
    assert record.owner == "" and record.charged is False
    # interns may not touch it; researchers may, audited
    assert not cluster.delete("Pod", record.name, "alice", INTERN).allowed


def test_the_garbage_collector_deletes_what_it_must(cluster, store):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    assert cluster.delete("ReplicaSet", rs["metadata"]["name"], GC, SYSTEM).allowed
    assert cluster.delete("Deployment", "serve", GC, SYSTEM).allowed
    assert held(store) == {}


# ------------------------------------------------------------------ CronJob


def test_each_job_of_a_cronjob_is_charged_to_its_owner_whatever_the_concurrency_policy(cluster, store):
    made = cluster.create(cronjob("nightly"), "alice", INTERN)
    assert made.allowed
    job_template = made.obj["spec"]["jobTemplate"]
    assert job_template["metadata"]["annotations"]["gpu-gateway.io/owner"] == "alice"
    assert held(store) == {}  # the CronJob itself runs nothing
    first = cluster.job_of(made.obj)
    second = cluster.job_of(made.obj)
    assert first.allowed and second.allowed
    assert held(store) == {"alice": 16}
    third = cluster.job_of(made.obj)
    assert not third.allowed and "user alice (role intern) may hold at most 16 GPUs at once" in third.message
    # the Jobs' pods belong to alice and are not charged again
    pod = cluster.pod_of(first.obj, first.obj["spec"]["template"], JOB_CONTROLLER)
    assert pod.allowed
    assert held(store) == {"alice": 16}
    # a Job deleted frees its GPUs for the next one once its pods are gone: until the garbage
    # collector deletes them, they hold the Job's GPUs as a charge of their own
    assert cluster.delete("Job", first.obj["metadata"]["name"], CRONJOB_CONTROLLER, SYSTEM).allowed
    assert held(store) == {"alice": 16}
    assert not cluster.job_of(made.obj).allowed
    assert cluster.delete("Pod", pod.obj["metadata"]["name"], GC, SYSTEM).allowed  # never scheduled: gone at once
    assert cluster.job_of(made.obj).allowed


def test_a_cronjob_over_the_per_workload_limit_is_refused_at_once(cluster):
    answer = cluster.create(cronjob("big", gpus=16), "alice", INTERN)
    assert not answer.allowed and "may launch at most 8 GPUs per workload" in answer.message


# ------------------------------------------------------------------ identities that are not actors


@pytest.mark.parametrize("user", [
    "system:serviceaccount:kube-system:default",
    "system:serviceaccount:default:kuberay-operator",
    "system:serviceaccount:research:replicaset-controller",
])
def test_service_accounts_anyone_could_borrow_are_not_controllers(cluster, store, user):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    pod = make_pod(gpus=8).named("research", "sneaky").owned_by("bob", "vision").obj()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "serve",
                                           "uid": dep["metadata"]["uid"], "controller": True}]
    answer = cluster.create(pod, user, ("system:serviceaccounts",))
    assert not answer.allowed and "may not launch GPU workloads" in answer.message
    assert held(store) == {"bob": 8}


def test_a_controller_creating_a_kind_it_does_not_make_is_refused(cluster):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    answer = cluster.pod_of(dep, dep["spec"]["template"], DEPLOYMENT_CONTROLLER)
    assert not answer.allowed and "may not create Pod objects with GPUs" in answer.message


def test_a_controllers_gpu_object_without_a_controller_owner_is_refused(cluster):
    answer = cluster.create(make_pod(gpus=8).named("research", "orphan").owned_by("bob").obj(),
                            JOB_CONTROLLER, SYSTEM)
    assert not answer.allowed and "no controller ownerReference" in answer.message


# ------------------------------------------------------------------ integrity on UPDATE


def test_a_template_moved_to_a_team_the_person_is_not_in_is_stamped_back_or_denied(cluster, service):
    from conftest import review

    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    moved = copy.deepcopy(dep)
    moved["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/team"] = "nlp"
    answer = cluster.update(moved, "bob", RESEARCHER)
    assert answer.allowed
    assert answer.obj["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/team"] == "vision"
    # and where the mutating webhook did not run, the validating one refuses it
    body = review(moved, old=dep, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    response = service.validate(body)["response"]
    assert not response["allowed"] and "must keep gpu-gateway.io/team: vision" in response["status"]["message"]
    # moving the whole workload to another team is a reassignment
    moved["metadata"]["annotations"]["gpu-gateway.io/team"] = "nlp"
    answer = cluster.update(moved, "bob", RESEARCHER)
    assert not answer.allowed and "may not change the owner or team" in answer.message


def test_an_owner_annotation_removed_from_a_template_is_stamped_again(cluster):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    del dep["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"]
    answer = cluster.update(dep, "bob", RESEARCHER)
    assert answer.allowed
    assert answer.obj["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"


def test_an_owner_annotation_removed_without_the_mutating_webhook_is_denied(cluster, service):
    from conftest import review

    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    new = copy.deepcopy(dep)
    del new["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"]
    body = review(new, old=dep, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    response = service.validate(body)["response"]
    assert not response["allowed"] and "removes it" in response["status"]["message"]


# ------------------------------------------------------------------ pod sets by path


def test_a_privileged_gpu_template_cannot_hide_behind_a_pod_set_of_the_same_name(cluster):
    def template(privileged: bool, gpus: int) -> dict[str, Any]:
        c = container(gpus)
        if privileged:
            c["securityContext"] = {"privileged": True}
        return {"spec": {"containers": [c]}}

    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc", "namespace": "research"},
           "spec": {"headGroupSpec": {"template": template(False, 0)},
                    "workerGroupSpecs": [{"groupName": "head", "replicas": 1, "template": template(True, 8)}]}}
    answer = cluster.create(ray, "bob", RESEARCHER)
    assert not answer.allowed and "privileged" in answer.message


def test_scaling_a_pytorchjob_moves_its_workers_only(cluster, store):
    job = make_pytorchjob(workers=3, gpus=8).named("research", "llm").obj()
    assert cluster.create(job, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 32}  # 1 master + 3 workers
    assert cluster.scale("PyTorchJob", "llm", 7, HPA, SYSTEM).allowed
    assert held(store) == {"bob": 64}  # 1 master + 7 workers, not 32 / 3 * 7
    assert cluster.scale("PyTorchJob", "llm", 1, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 16}


def test_operator_pods_belong_to_the_training_jobs_owner(cluster, store):
    job = cluster.create(make_pytorchjob(workers=1, gpus=8).named("research", "llm").obj(), "bob", RESEARCHER).obj
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    assert cluster.pod_of(job, worker, TRAINING_OPERATOR).allowed
    # and an operator that does not make PyTorchJob pods may not claim them
    answer = cluster.pod_of(job, worker, KUBERAY)
    assert answer.allowed  # KubeRay may create pods: the pod is still bob's and fits his job
    assert {r.owner for r in store.reservations()} == {"bob"}


def test_admins_see_unowned_children_and_may_reassign_the_parent(cluster, store):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    dep["metadata"]["annotations"]["gpu-gateway.io/owner"] = "rita"
    answer = cluster.update(dep, "root", ADMIN)
    assert answer.allowed
    assert {r.name: r.owner for r in store.reservations()}["serve"] == "rita"


def test_each_pod_of_a_gpu_daemonset_is_charged_to_its_owner(cluster, store):
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "probe", "namespace": "research"},
          "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": {
              "metadata": {"labels": {"app": "probe"}}, "spec": {"containers": [container(8)]}}}}
    made = cluster.create(ds, "alice", INTERN)
    assert made.allowed and held(store) == {}
    daemon = "system:serviceaccount:kube-system:daemon-set-controller"
    assert cluster.pod_of(made.obj, made.obj["spec"]["template"], daemon).allowed
    assert cluster.pod_of(made.obj, made.obj["spec"]["template"], daemon).allowed
    assert held(store) == {"alice": 16}
    third = cluster.pod_of(made.obj, made.obj["spec"]["template"], daemon)  # one per node, past her cap
    assert not third.allowed and "may hold at most 16 GPUs at once" in third.message


# ------------------------------------------------------------------ queue mode, from the ledger


@pytest.fixture
def queued_cluster(tmp_path) -> Cluster:
    from builders_queue import queue_policies

    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder

    store = SQLiteStore(tmp_path / "queued.db")
    return Cluster(AdmissionService(PolicyHolder(queue_policies(tmp_path / "policies")), store, metrics=Metrics()))


def test_pods_of_a_queued_workload_must_wait_behind_the_gate_whatever_their_template_says(queued_cluster):
    cluster = queued_cluster
    made = cluster.create(deployment("serve", replicas=2), "bob", RESEARCHER)
    assert made.allowed and "is queued" in " ".join(made.warnings)
    rs = cluster.replicaset_of(made.obj, replicas=2).obj
    # the template carries the queue key, so the mutating webhook gates the pod
    gated = cluster.pod_of(rs, rs["spec"]["template"], REPLICASET_CONTROLLER)
    assert gated.allowed and gated.obj["spec"]["schedulingGates"] == [{"name": "gpu-gateway.io/quota"}]
    # a template that lost its queue key (edited before the rule, or by a controller) is caught
    # from the ledger: the workload waits, so its pods must carry the gate
    bare = copy.deepcopy(rs["spec"]["template"])
    del bare["metadata"]["annotations"]["gpu-gateway.io/workload"]
    answer = cluster.pod_of(rs, bare, REPLICASET_CONTROLLER)
    assert not answer.allowed and "must carry the gpu-gateway.io/quota scheduling gate" in answer.message


# ------------------------------------------------------------------ upgrade from a ledger without UIDs


def test_a_ledger_from_before_uids_is_upgraded_and_its_records_still_own_their_children(tmp_path, policy_dir):
    import sqlite3

    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder

    state = tmp_path / "old.db"
    db = sqlite3.connect(state)
    db.executescript("""
        CREATE TABLE reservations (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
            owner TEXT NOT NULL, team TEXT NOT NULL, role TEXT NOT NULL, gpus INTEGER NOT NULL,
            charged INTEGER NOT NULL, shape TEXT NOT NULL, created_at REAL NOT NULL, request_uid TEXT NOT NULL,
            PRIMARY KEY (resource, namespace, name));
        INSERT INTO reservations VALUES ('jobs.batch', 'research', 'old', 'bob', 'vision', 'researcher', 16, 1,
            '{"unit":null,"sets":[["main",2,8]]}', 1.0, 'r1');
    """)
    db.commit()
    db.close()
    store = SQLiteStore(state)
    cluster = Cluster(AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics()))
    old_job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "old", "namespace": "research", "uid": "uid-of-the-old-job"},
               "spec": {"parallelism": 2, "template": {"spec": {"containers": [container(8)]}}}}
    pod = cluster.pod_of(old_job, old_job["spec"]["template"], JOB_CONTROLLER)
    assert pod.allowed
    records = {r.name: r for r in store.reservations()}
    assert records[pod.obj["metadata"]["name"]].owner == "bob"
    assert held(store) == {"bob": 16}
