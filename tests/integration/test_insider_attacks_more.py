"""More insider attacks on "every GPU that can run is charged to exactly one person": the
controllers' pods under one root, pod deletes that release a charge while the pod still runs,
parents whose GPUs come from elsewhere, and priorities Kueue and the schedulers act on.

Each test is one way in, driven through the real AdmissionService by tests/cluster_sim.py.
A test marked xfail (strict) is a hole the gateway does not close yet, named in its reason;
the others record attempts it stops.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from contextlib import closing
from typing import Any

import pytest
from builders_dra import claim, exactly, naming
from cluster_sim import (
    DEPLOYMENT_CONTROLLER,
    HPA,
    JOB_CONTROLLER,
    REPLICASET_CONTROLLER,
    SYSTEM,
    TRAINING_OPERATOR,
    Cluster,
)
from conftest import ADMIN, INTERN, RESEARCHER, container, make_deployment, make_pod, make_pytorchjob, review

from gateway.admission.admission import KUEUE_PRIORITY_LABEL as KUEUE_PRIORITY
from gateway.audit.ports import AuditQuery
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from integration.test_approvals import Clock, approve, ask, service_on
from integration.test_insider_attacks import (
    KUEUE,
    charged,
    delete,
    deployment,
    held,
    pods_of,
    records,
    running_gpus,
    template,
)

GRACE = 600  # the longest limits.yaml max_gpu_termination_grace_seconds lets a GPU pod set
KSERVE = "system:serviceaccount:kserve:kserve-controller-manager"
KUBELET = ("system:node:gpu-node-1", ("system:nodes",))


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def long_grace(dep: dict[str, Any], *, finalizers: list[str] | None = None) -> dict[str, Any]:
    """`dep` whose pods trap SIGTERM and run out the longest grace period they may set."""
    spec = dep["spec"]["template"]
    spec["spec"]["terminationGracePeriodSeconds"] = GRACE
    if finalizers:
        spec.setdefault("metadata", {})["finalizers"] = finalizers
    return dep


def scheduled(cluster: Cluster, name: str) -> None:
    cluster.objects[("Pod", "research", name)]["spec"]["nodeName"] = "gpu-node-1"


def terminating(cluster: Cluster, name: str) -> None:
    """The API server's side of a graceful DELETE: the pod stays, marked, until the kubelet's final one."""
    meta = cluster.objects[("Pod", "research", name)]["metadata"]
    meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    meta["deletionGracePeriodSeconds"] = GRACE


def graceful_delete(cluster: Cluster, name: str, user: str, groups: tuple[str, ...]) -> bool:
    answer = delete(cluster, "Pod", name, user, groups, stays=True)
    if answer.allowed:
        terminating(cluster, name)
    return answer.allowed


def force_delete(cluster: Cluster, name: str, user: str, groups: tuple[str, ...]) -> bool:
    """`kubectl delete pod --force --grace-period=0`: the object goes at once."""
    body = review(None, old=cluster.get("Pod", name), user=user, groups=groups, operation="DELETE").body()
    body["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    allowed = bool(cluster.service.validate(body)["response"]["allowed"])
    if allowed:
        del cluster.objects[("Pod", "research", name)]
    return allowed


def running_pod_of(cluster: Cluster, name: str = "serve", **kw: Any) -> tuple[dict[str, Any], str]:
    """alice's Deployment (`kw` for `long_grace`), its ReplicaSet, and one pod on a node."""
    made = cluster.create(long_grace(deployment(name), **kw), "alice", INTERN)
    assert made.allowed, made.message
    rs = cluster.replicaset_of(made.obj, replicas=1).obj
    [pod] = pods_of(cluster, rs, 1)
    assert pod.allowed, pod.message
    scheduled(cluster, pod.obj["metadata"]["name"])
    return rs, pod.obj["metadata"]["name"]


# ================================================================== pod deletes that release too early


def test_force_deleting_a_pod_does_not_free_gpus_its_containers_still_hold(cluster, store):
    rs, name = running_pod_of(cluster)
    # The object goes at once; the kubelet kills the containers with the pod's own grace period
    # (SIGTERM trapped): 8 GPUs run on the node that no pod object shows.
    assert force_delete(cluster, name, "alice", INTERN)
    ghost = 8
    replacement = pods_of(cluster, rs, 1)[0]
    running = running_gpus(cluster) + ghost
    assert not replacement.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_removing_the_finalizer_of_a_terminating_pod_does_not_free_its_gpus(cluster, store):
    rs, name = running_pod_of(cluster, finalizers=["alice.example.com/hold"])
    assert graceful_delete(cluster, name, "alice", INTERN)
    assert not pods_of(cluster, rs, 1)[0].allowed, "the terminating pod still holds the root's 8 GPUs"
    released = cluster.get("Pod", name)
    released["metadata"]["finalizers"] = []
    answer = cluster.update(released, "alice", INTERN)
    if answer.allowed:  # deletionGracePeriodSeconds > 0: the API server keeps the pod; it runs on
        cluster.objects[("Pod", "research", name)] = answer.obj
    replacement = pods_of(cluster, rs, 1)[0]
    assert not replacement.allowed, f"two 8-GPU pods run on an 8-GPU charge: {held(store)}"


def test_deleting_the_root_keeps_its_terminating_pods_charged(cluster, store):
    rs, name = running_pod_of(cluster)
    assert delete(cluster, "Deployment", "serve", "alice", INTERN).allowed  # background propagation
    assert delete(cluster, "ReplicaSet", rs["metadata"]["name"], "system:serviceaccount:kube-system:"
                  "generic-garbage-collector", SYSTEM).allowed
    assert graceful_delete(cluster, name, "system:serviceaccount:kube-system:generic-garbage-collector", SYSTEM)
    assert running_gpus(cluster) == 8
    # the pod runs out its grace period: its 8 GPUs stay alice's until it is gone
    assert held(store) == {"alice": 8}
    assert cluster.create(deployment("again"), "alice", INTERN).allowed
    assert not cluster.create(deployment("more"), "alice", INTERN).allowed, "24 GPUs on a 16-GPU cap"
    assert charged(store) >= running_gpus(cluster) + 8, f"{running_gpus(cluster) + 8} GPUs run, {held(store)} charged"
    # the kubelet's final DELETE, once the containers have stopped, releases them
    assert force_delete(cluster, name, *KUBELET)
    assert held(store) == {"alice": 8}


def test_scaling_the_root_down_keeps_its_terminating_pods_charged(cluster, store):
    rs, name = running_pod_of(cluster)
    down = cluster.get("Deployment", "serve")
    down["spec"]["replicas"] = 0
    assert cluster.update(down, "alice", INTERN).allowed
    rs_down = cluster.get("ReplicaSet", rs["metadata"]["name"])
    rs_down["spec"]["replicas"] = 0
    assert cluster.update(rs_down, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    assert graceful_delete(cluster, name, REPLICASET_CONTROLLER, SYSTEM)
    assert held(store) == {"alice": 8}, "the terminating pod still holds what the root was charged"
    assert cluster.create(deployment("b"), "alice", INTERN).allowed
    assert not cluster.create(deployment("c"), "alice", INTERN).allowed, "24 GPUs on a 16-GPU cap"
    assert charged(store) >= running_gpus(cluster) + 8, f"{running_gpus(cluster) + 8} GPUs run, {held(store)} charged"
    # the pod is gone (the kubelet's final DELETE): the charge comes down to the root's size, 0
    assert force_delete(cluster, name, *KUBELET)
    assert held(store) == {"alice": 8}
    assert records(store)["serve"].gpus == 0 and "asks" not in records(store)["serve"].extra


def test_a_terminating_pod_keeps_its_root_from_growing_back_past_its_charge(cluster, store):
    """The scale-down above, then up again: the ReplicaSet's new pod does not fit beside the old."""
    rs, name = running_pod_of(cluster)
    assert graceful_delete(cluster, name, "alice", INTERN)
    up = cluster.get("ReplicaSet", rs["metadata"]["name"])
    assert not pods_of(cluster, up, 1)[0].allowed
    assert held(store) == {"alice": 8}


def test_a_person_cannot_send_the_kubelets_final_delete_for_a_pod_still_terminating(cluster, store):
    """Only a force delete releases at once (above); a person's DELETE naming the pod's own grace
    period, or one of someone else's pod, does not."""
    rs, name = running_pod_of(cluster)
    assert graceful_delete(cluster, name, "alice", INTERN)
    assert not force_delete(cluster, name, "eve", ("gpu-interns", "team:vision"))
    assert delete(cluster, "Pod", name, "alice", INTERN, stays=True).allowed  # a second graceful DELETE
    assert records(store)[name].gpus == 8
    assert not pods_of(cluster, rs, 1)[0].allowed


def test_a_pod_forced_out_cannot_be_replaced_at_once_under_its_own_name(cluster, store):
    """A bare pod force-deleted and created again by name: the first one's containers may still run."""
    pod = make_pod(gpus=8).named("research", "solo").obj()
    pod["spec"]["terminationGracePeriodSeconds"] = GRACE
    assert cluster.create(pod, "alice", INTERN).allowed
    scheduled(cluster, "solo")
    assert force_delete(cluster, "solo", "alice", INTERN)
    assert held(store) == {"alice": 8}
    again = cluster.create(pod, "alice", INTERN)
    assert not again.allowed and "may still exist" in again.message
    assert held(store) == {"alice": 8}


def test_only_the_pods_own_node_sends_the_final_delete_that_frees_at_once(cluster, store):
    rs, name = running_pod_of(cluster)
    assert graceful_delete(cluster, name, "alice", INTERN)
    # another node's identity (NodeRestriction would refuse it anyway): held for the grace period
    assert force_delete(cluster, name, "system:node:gpu-node-2", ("system:nodes",))
    assert records(store)[name].gpus == 8
    assert not pods_of(cluster, rs, 1)[0].allowed


def test_a_replicaset_left_by_a_deleted_root_makes_no_gpu_pods(cluster, store):
    made = cluster.create(deployment("serve"), "alice", INTERN).obj
    rs = cluster.replicaset_of(made, replicas=1).obj
    assert delete(cluster, "Deployment", "serve", "alice", INTERN).allowed  # background: the GC comes later
    assert held(store) == {}
    answer = pods_of(cluster, rs, 1)[0]
    assert not answer.allowed and "no longer holds" in answer.message


# ================================================================== siblings of one root


def test_a_shared_claim_on_one_template_does_not_hide_the_other_templates_pods(cluster, store):
    assert cluster.create(claim("shared", exactly("gpu.nvidia.com", 8)), "bob", RESEARCHER).allowed
    job = make_pytorchjob(workers=8, gpus=1).named("research", "llm").obj()
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    master["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 8
    naming(master["spec"], claims=("shared",))
    made = cluster.create(job, "bob", RESEARCHER)
    assert made.allowed, made.message
    assert held(store) == {"bob": 8 + 8 + 8 * 1}  # master's 8, the claim once, 8 workers of 1
    stored = made.obj
    specs = stored["spec"]["pytorchReplicaSpecs"]
    for _ in range(8):
        assert cluster.pod_of(stored, specs["Worker"]["template"], TRAINING_OPERATOR).allowed
    masters = [cluster.pod_of(stored, specs["Master"]["template"], TRAINING_OPERATOR).obj]
    for _ in range(3):  # bob deletes the master; it traps SIGTERM; the operator makes another
        name = masters[-1]["metadata"]["name"]
        scheduled(cluster, name)
        assert graceful_delete(cluster, name, "bob", RESEARCHER)
        again = cluster.pod_of(stored, specs["Master"]["template"], TRAINING_OPERATOR)
        if not again.allowed:
            break
        masters.append(again.obj)
    plugin = running_gpus(cluster)  # device-plugin GPUs of the pods; the shared claim's 8 once
    assert len(masters) == 1, f"{len(masters)} masters: {plugin + 8} GPUs run, {held(store)} charged"


def test_a_controllers_pods_from_templates_of_different_sizes_fit_the_root_together(cluster, store):
    job = make_pytorchjob(workers=2, gpus=1).named("research", "mixed").obj()
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"] = template(4, "pytorch")
    made = cluster.create(job, "alice", INTERN).obj  # 4 + 2 x 1
    specs = made["spec"]["pytorchReplicaSpecs"]
    assert cluster.pod_of(made, specs["Master"]["template"], TRAINING_OPERATOR).allowed
    assert all(cluster.pod_of(made, specs["Worker"]["template"], TRAINING_OPERATOR).allowed for _ in range(2))
    # a second master (the first one terminating) does not fit beside them
    assert not cluster.pod_of(made, specs["Master"]["template"], TRAINING_OPERATOR).allowed
    assert held(store) == {"alice": 6}


# ================================================================== parents the ledger does not know


def legacy_deployment(cluster: Cluster, name: str = "legacy", *, gpus: int = 8) -> None:
    """A Deployment parked at 0 replicas before the gateway was installed (or while it was down):
    no pods, no ledger record, and a `/scale` of it carries no template."""
    legacy = deployment(name, gpus=gpus, replicas=0)
    legacy["metadata"]["uid"] = f"uid-{name}-from-before-the-gateway"
    cluster.objects[("Deployment", "research", name)] = legacy


def audited_scales(store: Any, name: str) -> list[dict[str, Any]]:
    return [r for r in store.audit_rows(AuditQuery(action="modify", name=name))]


def test_an_autoscaler_cannot_grow_a_gpu_root_the_ledger_never_recorded(cluster, store):
    legacy_deployment(cluster)
    [root] = cluster.list_roots()  # the controller's listing when it starts
    assert root.key == "deployments.apps/research/legacy" and root.uid == "uid-legacy-from-before-the-gateway"
    answer = cluster.scale("Deployment", "legacy", 100, HPA, SYSTEM)
    assert not answer.allowed, "800 GPUs for nobody"
    assert "no recorded owner" in answer.message
    [record] = audited_scales(store, "legacy")
    assert (record["user"], record["owner"], record["decision"], record["rule"]) == (
        HPA, "", "denied", "unowned-workload")


def test_an_intern_cannot_scale_a_gpu_root_the_ledger_never_recorded(cluster, store):
    legacy_deployment(cluster)
    cluster.list_roots()
    answer = cluster.scale("Deployment", "legacy", 100, "alice", INTERN)
    assert not answer.allowed
    assert "belongs to nobody recorded" in answer.message
    [record] = audited_scales(store, "legacy")
    assert (record["user"], record["owner"], record["decision"]) == ("alice", "", "denied")


def test_an_admin_may_scale_a_gpu_root_the_ledger_recorded_unowned_audited(cluster, store):
    legacy_deployment(cluster)
    cluster.list_roots()
    assert cluster.scale("Deployment", "legacy", 2, "root", ADMIN).allowed
    [record] = audited_scales(store, "legacy")
    assert (record["user"], record["owner"], record["decision"], record["gpus"]) == ("root", "", "allowed", 16)
    assert "unowned" in record["reason"]
    assert records(store)["legacy"].owner == "" and records(store)["legacy"].gpus == 16


def test_a_scale_of_an_unknown_workload_waits_for_the_controller_s_listing(policy_dir, store):
    """Before the controller has listed the workloads that predate the gateway, the ledger's not
    knowing a workload says nothing about its GPUs: a scale of it is refused, whoever asks."""
    cluster = Cluster(AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), await_listing=True))
    legacy_deployment(cluster)
    web = make_deployment(gpus=0, replicas=2).named("research", "web").obj()
    web["metadata"]["uid"] = "uid-web-from-before-the-gateway"
    cluster.objects[("Deployment", "research", "web")] = web
    for user, groups in ((HPA, SYSTEM), ("alice", INTERN), ("root", ADMIN)):
        for name in ("legacy", "web"):
            answer = cluster.scale("Deployment", name, 3, user, groups)
            assert not answer.allowed and "has not yet listed the workloads that predate it" in answer.message
    assert [r.key for r in cluster.list_roots()] == ["deployments.apps/research/legacy"]
    assert cluster.scale("Deployment", "web", 10, HPA, SYSTEM).allowed, "a CPU Deployment scales as before"
    assert not cluster.scale("Deployment", "legacy", 10, HPA, SYSTEM).allowed
    assert cluster.list_roots() == [], "a second listing records nothing again"


def test_the_listing_holds_controllers_children_to_their_root_and_leaves_cpu_workloads_alone(cluster, store):
    legacy_deployment(cluster)
    made = cluster.create(deployment("serve", replicas=1), "bob", RESEARCHER)
    assert made.allowed and made.obj is not None
    child = cluster.replicaset_of(made.obj, 1)
    assert child.allowed
    orphan = copy.deepcopy(child.obj)
    assert orphan is not None
    orphan["metadata"]["name"] = "serve-legacy-rs"
    cluster.objects[("ReplicaSet", "research", "serve-legacy-rs")] = orphan  # a controller's, unknown
    web = make_deployment(gpus=0, replicas=2).named("research", "web").obj()
    cluster.objects[("Deployment", "research", "web")] = web
    before = {k: (r.owner, r.gpus, r.charged) for k, r in records(store).items()}
    # the unknown ReplicaSet of bob's Deployment is recorded under it (its owner's, charged nothing)
    assert {r.key for r in cluster.list_roots()} == {"deployments.apps/research/legacy",
                                                      "replicasets.apps/research/serve-legacy-rs"}
    after = {k: (r.owner, r.gpus, r.charged) for k, r in records(store).items()}
    assert after == {**before, "legacy": ("", 0, True), "serve-legacy-rs": ("bob", 8, False)}


def test_an_inference_service_cannot_take_its_gpus_from_a_serving_runtime_uncharged(cluster, store):
    runtime = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
               "metadata": {"name": "vllm", "namespace": "research"},
               "spec": {"supportedModelFormats": [{"name": "llm"}],
                        "containers": [{"name": "kserve-container", "image": "vllm/vllm-openai",
                                        "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}
    assert cluster.create(runtime, "alice", INTERN).allowed
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "chat", "namespace": "research"},
            "spec": {"predictor": {"minReplicas": 8, "maxReplicas": 8, "model": {
                "modelFormat": {"name": "llm"}, "runtime": "vllm",
                "resources": {"limits": {"cpu": "4", "memory": "32Gi"}}}}}}
    made = cluster.create(isvc, "alice", INTERN)
    assert made.allowed
    # KServe merges the runtime's container into the predictor's (the GPU limit stays)
    pod_template = {"metadata": {"labels": {"app": "chat"}}, "spec": {"containers": [container(8)]}}
    dep_spec = {"replicas": 8, "selector": {"matchLabels": {"app": "chat"}}, "template": pod_template}
    child = cluster.child(made.obj, "apps/v1", "Deployment", pod_template, dep_spec, KSERVE,
                          name="chat-predictor")
    assert not child.allowed, f"64 GPUs for alice's InferenceService, charged: {held(store)}"


# ================================================================== priorities Kueue and schedulers act on


def test_an_intern_cannot_take_a_high_priority_through_a_kubeflow_scheduling_policy(cluster, store):
    job = make_pytorchjob(workers=1, gpus=4).named("research", "jump").obj()
    job["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    job["spec"]["runPolicy"] = {"suspend": True, "schedulingPolicy": {"priorityClass": "high"}}
    assert not cluster.create(job, "alice", INTERN).allowed


def test_an_intern_cannot_take_a_high_priority_through_a_ray_head_without_gpus(cluster, store):
    head = template(0, "ray-head")
    head["spec"]["priorityClassName"] = "high"
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
           "metadata": {"name": "rc", "namespace": "research", "labels": {"kueue.x-k8s.io/queue-name": "gpu"}},
           "spec": {"suspend": True, "headGroupSpec": {"template": head}, "workerGroupSpecs": [
               {"groupName": "gpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                "template": template(8, "ray-worker")}]}}
    assert not cluster.create(ray, "alice", INTERN).allowed


def test_an_intern_cannot_take_a_high_priority_class_on_a_resumed_or_edited_pytorchjob(cluster, store):
    job = make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj()
    job["spec"]["runPolicy"] = {"suspend": True}
    assert cluster.create(job, "alice", INTERN).allowed
    raised = cluster.get("PyTorchJob", "llm")
    raised["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["priorityClassName"] = "high"
    assert not cluster.update(raised, "alice", INTERN).allowed
    raised["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"].pop("priorityClassName")
    raised["metadata"].setdefault("labels", {})["kueue.x-k8s.io/priority-class"] = "high"
    assert not cluster.update(raised, "alice", INTERN).allowed
    resumed = cluster.get("PyTorchJob", "llm")
    resumed["spec"]["runPolicy"]["suspend"] = False
    assert cluster.update(resumed, KUEUE, SYSTEM).allowed
    assert held(store) == {"alice": 8}


def test_an_intern_cannot_take_a_high_priority_on_a_bare_gpu_pod_or_its_kueue_label(cluster, store):
    pod = make_pod(gpus=8).named("research", "p").obj()
    pod["spec"]["priorityClassName"] = "high"
    assert not cluster.create(pod, "alice", INTERN).allowed
    pod["spec"].pop("priorityClassName")
    pod["metadata"]["labels"] = {"kueue.x-k8s.io/priority-class": "high", "kueue.x-k8s.io/queue-name": "gpu"}
    assert not cluster.create(pod, "alice", INTERN).allowed
    assert held(store) == {}


def test_a_controllers_pod_may_not_carry_a_priority_class_its_owner_may_not_use(cluster, store):
    made = cluster.create(deployment("serve"), "alice", INTERN).obj
    rs = cluster.replicaset_of(made, replicas=1).obj
    high = copy.deepcopy(rs["spec"]["template"])
    high["spec"]["priorityClassName"] = "high"
    answer = cluster.pod_of(rs, high, REPLICASET_CONTROLLER)
    assert not answer.allowed, "the pod's priority is checked against alice's role, not its template's"
    assert "user alice (role intern) may not use priority class high" in answer.message
    [audited] = [r for r in store.audit_rows() if r["decision"] == "denied"]
    assert audited["rule"] == "priority-class" and audited["action"] == "launch"
    assert held(store) == {"alice": 8}


def deployed(cluster: Cluster, dep: dict[str, Any]) -> tuple[Any, Any]:
    """alice's `dep` admitted, its ReplicaSet and its one pod made by their controllers."""
    made = cluster.create(dep, "alice", INTERN)
    assert made.allowed, made.message
    rs = cluster.replicaset_of(made.obj, replicas=1)
    assert rs.allowed, rs.message
    [pod] = pods_of(cluster, rs.obj, 1)
    assert pod.allowed, pod.message
    return rs, pod


def test_a_controllers_pods_may_carry_the_priority_class_an_approval_let_the_root_use(policy_dir, store):
    clock = Clock()
    cluster = Cluster(service_on(store, policy_dir, clock))
    dep = deployment("serve")
    dep["spec"]["template"]["spec"]["priorityClassName"] = "high"
    assert not cluster.create(dep, "alice", INTERN).allowed
    approve(store, clock, ask(store, clock, kind="Deployment", name="serve", gpus=8))
    rs, pod = deployed(cluster, dep)
    assert held(store) == {"alice": 8}
    # the exception covers the class the root was admitted with, not any other
    other = copy.deepcopy(rs.obj["spec"]["template"])
    other["spec"]["priorityClassName"] = "system-cluster-critical"
    assert delete(cluster, "Pod", pod.obj["metadata"]["name"], REPLICASET_CONTROLLER, SYSTEM).allowed
    denied = cluster.pod_of(rs.obj, other, REPLICASET_CONTROLLER)
    assert not denied.allowed and "priority class system-cluster-critical" in denied.message


def test_a_cronjobs_jobs_and_pods_may_carry_the_priority_class_an_approval_let_it_use(policy_dir, store):
    clock = Clock()
    cluster = Cluster(service_on(store, policy_dir, clock))
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "priorityClassName": "high", "containers": [container(8)]}}}}}}
    approve(store, clock, ask(store, clock, kind="CronJob", name="nightly", gpus=8))
    assert cluster.create(cron, "alice", INTERN).allowed
    job = cluster.job_of(cluster.get("CronJob", "nightly"))
    assert job.allowed, job.message
    [pod] = [cluster.pod_of(job.obj, job.obj["spec"]["template"], JOB_CONTROLLER)]
    assert pod.allowed, pod.message
    assert held(store) == {"alice": 8}


def test_an_operators_pod_may_not_carry_a_kueue_priority_its_owner_may_not_use(cluster, store):
    job = cluster.create(make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj(), "alice", INTERN)
    assert job.allowed, job.message
    worker = job.obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    answer = cluster.pod_of(job.obj, worker, TRAINING_OPERATOR, labels={KUEUE_PRIORITY: "high"})
    assert not answer.allowed
    assert "alice" in answer.message and "priority class high" in answer.message
    assert cluster.pod_of(job.obj, worker, TRAINING_OPERATOR).allowed
    assert held(store) == {"alice": 8}


def test_a_root_recorded_without_its_priority_classes_holds_its_pods_to_the_owners_role(cluster, store):
    """A record written before the classes were kept: nothing beyond the owner's role passes."""
    made = cluster.create(deployment("serve"), "alice", INTERN).obj
    rs = cluster.replicaset_of(made, replicas=1).obj
    [root] = [r for r in store.reservations() if r.name == "serve"]
    assert root.extra["priority_classes"] == [""]
    legacy = {k: v for k, v in root.extra.items() if k != "priority_classes"}
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute("UPDATE reservations SET shape = ? WHERE name = 'serve'", (json.dumps(legacy),))
    high = copy.deepcopy(rs["spec"]["template"])
    high["spec"]["priorityClassName"] = "high"
    assert not cluster.pod_of(rs, high, REPLICASET_CONTROLLER).allowed
    low = copy.deepcopy(rs["spec"]["template"])
    low["spec"]["priorityClassName"] = "low"
    assert cluster.pod_of(rs, low, REPLICASET_CONTROLLER).allowed
    assert held(store) == {"alice": 8}


def test_a_controllers_pod_may_carry_its_roots_template_priority_class(cluster, store):
    dep = deployment("serve")
    dep["spec"]["template"]["spec"]["priorityClassName"] = "low"
    dep["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})[KUEUE_PRIORITY] = "low"
    _, pod = deployed(cluster, dep)
    assert pod.obj["spec"]["priorityClassName"] == "low"
    assert held(store) == {"alice": 8}


def test_a_controllers_edit_of_the_root_does_not_widen_the_priority_classes_its_pods_may_carry(cluster, store):
    job = make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj()
    assert cluster.create(job, "alice", INTERN).allowed
    edited = cluster.get("PyTorchJob", "llm")
    edited["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["priorityClassName"] = "high"
    changed = cluster.update(edited, KUEUE, SYSTEM)
    if changed.allowed:
        cluster.objects[("PyTorchJob", "research", "llm")] = changed.obj
    made = cluster.get("PyTorchJob", "llm")
    worker = made["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    answer = cluster.pod_of(made, worker, TRAINING_OPERATOR)
    assert not answer.allowed and "priority class high" in answer.message
