"""Insider attacks on "who owns what": each test is one way around the rules, named for what
must hold.

An intern (`gpu-interns`, `team:vision`: 8 GPUs per workload, 16 at once), a researcher
(`gpu-researchers`: 256 / 1,024) or a user with no GPU role tries to run GPUs charged to
nobody or to someone else, to exceed their caps, or to act on someone else's workload,
mostly through the cluster itself: controllers and autoscalers that act for them, objects
created small and grown later, labels and ownerReferences controllers act on, and requests
the API server refuses after the gateway admitted them.

The invariant most tests end on: every GPU a pod holds in the cluster is charged to a person
(`charged >= running`). Driven through the real AdmissionService by tests/cluster_sim.py.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from cluster_sim import (
    CRONJOB_CONTROLLER,
    DEPLOYMENT_CONTROLLER,
    GC,
    HPA,
    JOB_CONTROLLER,
    KUBERAY,
    REPLICASET_CONTROLLER,
    STATEFULSET_CONTROLLER,
    SYSTEM,
    TRAINING_OPERATOR,
    Answer,
    Cluster,
)
from conftest import (
    ADMIN,
    INTERN,
    RESEARCHER,
    container,
    exec_review,
    make_deployment,
    make_pod,
    make_pytorchjob,
    review,
)

from gateway.admission.ports import Actor
from gateway.admission.workloads import GpuMatcher
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.reconcile import read_pod
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

EVE = ("gpu-interns", "team:vision")  # another intern in the same team
KUEUE = "system:serviceaccount:kueue-system:kueue-controller-manager"
TRAINER = "system:serviceaccount:kubeflow-system:kubeflow-trainer-controller-manager"
DAEMONSET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"
ARGO = "system:serviceaccount:argo:argo"
OWNER = "gpu-gateway.io/owner"


#: Findings not fixed yet, each kept as the test that will pass once it is, with the gap.
OPEN = {
    'test_the_ray_autoscaler_may_move_workers_within_the_counted_max_replicas': (
        "open: the Ray autoscaler acts as a service account of the user's namespace, which anyone "
        'there can borrow; no safe identity to list yet'
    ),
}


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def cluster_with(policy_dir: Path, store: SQLiteStore, *, actors: dict[str, Any] | None = None,
                 kinds: list[dict[str, Any]] | None = None) -> Cluster:
    """A cluster whose bundle also lists `actors` and registers `kinds`, as an operator would."""
    limits_path = policy_dir / "limits.yaml"
    limits = yaml.safe_load(limits_path.read_text())
    limits["actors"].update(actors or {})
    limits["workload_kinds"].extend(kinds or [])
    limits_path.write_text(yaml.safe_dump(limits, sort_keys=False))
    return Cluster(AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics()))


# ------------------------------------------------------------------ helpers


def held(store: SQLiteStore) -> dict[str, int]:
    return {user: gpus for user, gpus in store.gpus_by_user().items() if gpus}


def charged(store: SQLiteStore) -> int:
    return sum(held(store).values())


def records(store: SQLiteStore) -> dict[str, Any]:
    return {r.name: r for r in store.reservations()}


def pod_gpus(pod: dict[str, Any]) -> int:
    return sum(int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
               for c in pod["spec"].get("containers", []))


def running_gpus(cluster: Cluster) -> int:
    """GPUs held by the pods that exist in the cluster (terminating ones included)."""
    return sum(pod_gpus(obj) for (kind, _, _), obj in cluster.objects.items() if kind == "Pod")


def deployment(name: str, *, gpus: int = 8, replicas: int = 1, surge: int | str | None = 0) -> dict[str, Any]:
    dep = make_deployment(gpus=gpus, replicas=replicas).named("research", name).obj()
    if surge is not None:
        dep["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": 1}}
    return dep


def submit(cluster: Cluster, obj: dict[str, Any] | None, user: str, groups: tuple[str, ...],
           **kw: Any) -> dict[str, Any]:
    """Mutate then validate a request that the API server does not carry out afterwards (it
    refuses it: AlreadyExists, a PodDisruptionBudget, ...). The validating answer."""
    if obj is not None:
        obj = copy.deepcopy(obj)
        out = cluster.service.mutate(review(obj, user=user, groups=groups, **kw).body())["response"]
        if "patch" in out:
            obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(out["patch"])))
    return cluster.service.validate(review(obj, user=user, groups=groups, **kw).body())["response"]


def delete(cluster: Cluster, kind: str, name: str, user: str, groups: tuple[str, ...], *,
           propagation: str | None = None, stays: bool = False) -> Answer:
    """DELETE with DeleteOptions; `stays`: the object is still there afterwards (a finalizer
    holds it, or its pod is still terminating), marked with a deletionTimestamp."""
    old = cluster.get(kind, name)
    body = review(None, old=old, user=user, groups=groups, operation="DELETE").body()
    if propagation:
        body["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
                                      "propagationPolicy": propagation}
    response = cluster.service.validate(body)["response"]
    if response["allowed"]:
        if stays:
            cluster.objects[(kind, "research", name)]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        else:
            del cluster.objects[(kind, "research", name)]
    return Answer(response["allowed"], response.get("status", {}).get("message", ""), None)


def evict(cluster: Cluster, pod: str, user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": "research"}}
    return submit(cluster, eviction, user, groups, sub_resource="eviction", kind=("policy", "v1", "Eviction"),
                  resource=("", "pods"), name=pod)


def scale(cluster: Cluster, kind: str, name: str, group: str, resource: str, old: int, new: int,
          user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """UPDATE of `/scale` for kinds the simulator does not know."""
    def s(n: int) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": "research", "uid": cluster.get(kind, name)["metadata"]["uid"]},
                "spec": {"replicas": n}}
    body = review(s(new), old=s(old), user=user, groups=groups, operation="UPDATE", sub_resource="scale",
                  kind=("autoscaling", "v1", "Scale"), resource=(group, resource)).body()
    return cluster.service.validate(body)["response"]


def scaled(cluster: Cluster, kind: str, name: str, replicas: int, user: str, groups: tuple[str, ...]) -> Answer:
    """`Cluster.scale`, keeping the new count in the stored object when it is allowed."""
    answer = cluster.scale(kind, name, replicas, user, groups)
    if answer.allowed:
        cluster.objects[(kind, "research", name)] = answer.obj
    return answer


def pods_of(cluster: Cluster, parent: dict[str, Any], n: int, controller: str = REPLICASET_CONTROLLER) -> list[Answer]:
    return [cluster.pod_of(parent, parent["spec"]["template"], controller) for _ in range(n)]


def template(gpus: int, name: str = "main") -> dict[str, Any]:
    return {"spec": {"containers": [container(gpus, name=name)]}}


def ray_cluster_spec(worker_gpus: int, *, replicas: int = 1, autoscaling: bool = False,
                     max_replicas: int | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {"groupName": "gpu", "replicas": replicas, "minReplicas": replicas,
                             "template": template(worker_gpus, "ray-worker")}
    if max_replicas is not None:
        group["maxReplicas"] = max_replicas
    return {"enableInTreeAutoscaling": autoscaling, "headGroupSpec": {"template": template(0, "ray-head")},
            "workerGroupSpecs": [group]}


def lws(name: str, *, gpus: int = 8, size: int = 1, replicas: int = 1, max_surge: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas, "leaderWorkerTemplate": {
        "size": size, "workerTemplate": template(gpus)}}
    if max_surge is not None:
        spec["rolloutStrategy"] = {"type": "RollingUpdate",
                                   "rollingUpdateConfiguration": {"maxSurge": max_surge, "maxUnavailable": 0}}
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "namespace": "research"}, "spec": spec}


# ================================================================== zero size, then grow


def test_an_intern_cannot_grow_a_parked_deployment_past_caps_with_a_spec_update(cluster, store):
    assert cluster.create(deployment("parked", replicas=0), "alice", INTERN).allowed
    grown = cluster.get("Deployment", "parked")
    grown["spec"]["replicas"] = 2
    answer = cluster.update(grown, "alice", INTERN)
    assert not answer.allowed and "at most 8 GPUs per workload" in answer.message
    assert held(store) == {}


def test_raising_a_deployments_max_surge_is_decided_as_growth(cluster, store):
    assert cluster.create(deployment("serve", surge=0), "alice", INTERN).allowed
    dep = cluster.get("Deployment", "serve")
    dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = "100%"
    assert not cluster.update(dep, "alice", INTERN).allowed
    dep["spec"]["strategy"] = {"type": "RollingUpdate"}  # maxSurge back to its default 25%: 1 more pod
    assert not cluster.update(dep, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}


def test_growing_an_indexed_jobs_parallelism_and_completions_together_is_decided(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx", "namespace": "research"},
           "spec": {"completionMode": "Indexed", "parallelism": 1, "completions": 1,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}
    assert cluster.create(job, "alice", INTERN).allowed
    grown = cluster.get("Job", "idx")
    grown["spec"].update(parallelism=4, completions=4)
    assert not cluster.update(grown, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}


def test_a_suspended_jobset_resumed_by_kueue_is_held_to_the_owners_caps(cluster, store):
    jobset = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
              "metadata": {"name": "js", "namespace": "research"},
              "spec": {"suspend": True, "replicatedJobs": [{"name": "w", "replicas": 4, "template": {"spec": {
                  "parallelism": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}}]}}
    assert cluster.create(jobset, "alice", INTERN).allowed
    resumed = cluster.get("JobSet", "js")
    resumed["spec"]["suspend"] = False
    answer = cluster.update(resumed, KUEUE, SYSTEM)
    assert not answer.allowed and "user alice (role intern)" in answer.message
    assert held(store) == {}


def test_a_pytorchjob_scaled_while_suspended_is_decided_when_kueue_resumes_it(cluster, store):
    job = make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj()
    job["spec"]["runPolicy"] = {"suspend": True}
    assert cluster.create(job, "alice", INTERN).allowed
    assert scaled(cluster, "PyTorchJob", "llm", 50, "alice", INTERN).allowed  # runs nothing while suspended
    resumed = cluster.get("PyTorchJob", "llm")
    assert resumed["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 50
    resumed["spec"]["runPolicy"]["suspend"] = False
    answer = cluster.update(resumed, KUEUE, SYSTEM)
    assert not answer.allowed and "user alice (role intern)" in answer.message
    assert held(store) == {}


def test_an_elastic_pytorchjob_is_counted_at_its_max_replicas_on_create_and_on_update(cluster, store):
    job = make_pytorchjob(workers=1, gpus=1).named("research", "elastic").obj()
    job["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 16}
    assert not cluster.create(job, "alice", INTERN).allowed
    del job["spec"]["elasticPolicy"]
    assert cluster.create(job, "alice", INTERN).allowed
    grown = cluster.get("PyTorchJob", "elastic")
    grown["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 16}
    assert not cluster.update(grown, "alice", INTERN).allowed
    assert held(store) == {"alice": 2}


def test_turning_on_ray_autoscaling_is_decided_at_the_worker_groups_max_replicas(cluster, store):
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc", "namespace": "research"},
           "spec": ray_cluster_spec(8, max_replicas=16)}
    assert cluster.create(ray, "alice", INTERN).allowed
    on = cluster.get("RayCluster", "rc")
    on["spec"]["enableInTreeAutoscaling"] = True
    assert not cluster.update(on, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}


def test_removing_max_replicas_from_an_autoscaling_ray_worker_group_is_not_a_free_pass(cluster, store):
    # KubeRay defaults an absent maxReplicas to 2147483647.
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc", "namespace": "research"},
           "spec": ray_cluster_spec(8, autoscaling=True, max_replicas=1)}
    assert cluster.create(ray, "alice", INTERN).allowed
    unbounded = cluster.get("RayCluster", "rc")
    del unbounded["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert not cluster.update(unbounded, "alice", INTERN).allowed


def test_growing_a_leaderworkerset_by_size_or_by_scale_is_decided(cluster, store):
    assert cluster.create(lws("lws", gpus=4, size=2), "alice", INTERN).allowed
    bigger = cluster.get("LeaderWorkerSet", "lws")
    bigger["spec"]["leaderWorkerTemplate"]["size"] = 4
    assert not cluster.update(bigger, "alice", INTERN).allowed
    assert not cluster.scale("LeaderWorkerSet", "lws", 2, "alice", INTERN).allowed
    assert not cluster.scale("LeaderWorkerSet", "lws", 2, HPA, SYSTEM).allowed
    assert held(store) == {"alice": 8}


def test_a_leaderworkerset_rolling_update_surge_is_counted_like_a_deployments(cluster, store):
    """LWS `rolloutStrategy.rollingUpdateConfiguration.maxSurge` runs that many extra groups
    during a rolling update, as a Deployment's maxSurge runs extra pods."""
    answer = cluster.create(lws("lws", gpus=8, size=1, max_surge=1), "alice", INTERN)
    assert not answer.allowed, "an 8-GPU group plus 1 surge group is 16 GPUs, over the intern's 8 per workload"


# ================================================================== deletes that leave GPUs running


def _deployment_with_a_pod(cluster: Cluster, name: str = "serve", **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = cluster.create(deployment(name, **kw), "alice", INTERN).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    assert pods_of(cluster, rs, 1)[0].allowed
    return dep, rs


def test_deleting_a_deployment_with_orphan_propagation_does_not_uncharge_its_running_pods(cluster, store):
    _, rs = _deployment_with_a_pod(cluster)
    deleted = delete(cluster, "Deployment", "serve", "alice", INTERN, propagation="Orphan")
    if deleted.allowed:  # the garbage collector then removes the ownerReferences and leaves the rest
        orphan = cluster.get("ReplicaSet", rs["metadata"]["name"])
        orphan["metadata"]["ownerReferences"] = []
        cluster.update(orphan, GC, SYSTEM)
    assert running_gpus(cluster) == 8
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_a_deployment_held_by_a_finalizer_is_not_uncharged_while_its_pods_still_run(cluster, store):
    dep = deployment("serve")
    dep["metadata"]["finalizers"] = ["alice.example.com/keep"]
    made = cluster.create(dep, "alice", INTERN).obj
    rs = cluster.replicaset_of(made, replicas=1).obj
    assert pods_of(cluster, rs, 1)[0].allowed
    # The Deployment only gets a deletionTimestamp; background deletion waits for it to go,
    # so its ReplicaSet and pods keep running, and the ReplicaSet keeps replacing pods.
    delete(cluster, "Deployment", "serve", "alice", INTERN, stays=True)
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"
    replacement = pods_of(cluster, rs, 1)[0]
    if replacement.allowed:
        assert records(store)[replacement.obj["metadata"]["name"]].owner == "alice"


def test_an_eviction_refused_by_a_disruption_budget_does_not_uncharge_the_pod(cluster, store):
    # alice's PodDisruptionBudget (minAvailable: 1) makes the API server refuse her evictions with
    # 429 after admission; the pod keeps running. Then she launches more.
    for name in ("p1", "p2", "p3"):
        answer = cluster.create(make_pod(gpus=8).named("research", name).obj(), "alice", INTERN)
        if answer.allowed:
            evict(cluster, name, "alice", INTERN)
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_exec_into_a_gpu_pod_whose_eviction_was_refused_stays_the_owners(cluster, store):
    assert cluster.create(make_pod(gpus=8).named("research", "bobs").obj(), "bob", RESEARCHER).allowed
    evict(cluster, "bobs", "root", ADMIN)  # a drain; bob's PodDisruptionBudget refuses it, the pod stays
    response = cluster.service.validate(exec_review("research", "bobs", user="eve", groups=EVE).body())["response"]
    assert not response["allowed"], "eve may exec only into her own pods"


def test_terminating_gpu_pods_with_a_year_long_grace_period_are_not_free(cluster, store):
    dep = deployment("serve")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 365 * 24 * 3600
    made = cluster.create(dep, "alice", INTERN)
    if not made.allowed:
        return  # refusing such a grace period for GPU pods is one fix
    rs = cluster.replicaset_of(made.obj, replicas=1).obj
    pod = pods_of(cluster, rs, 1)[0].obj
    for _ in range(3):
        # the scheduler binds it; alice deletes it; it traps SIGTERM and runs until the grace
        # period ends, while the ReplicaSet controller makes a replacement at once
        cluster.objects[("Pod", "research", pod["metadata"]["name"])]["spec"]["nodeName"] = "gpu-node-1"
        delete(cluster, "Pod", pod["metadata"]["name"], "alice", INTERN, stays=True)
        replacement = pods_of(cluster, rs, 1)[0]
        if not replacement.allowed:
            break
        pod = replacement.obj
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_the_kubelets_final_delete_frees_a_terminating_pods_gpus(cluster, store):
    made = cluster.create(deployment("serve"), "alice", INTERN)
    rs = cluster.replicaset_of(made.obj, replicas=1).obj
    name = pods_of(cluster, rs, 1)[0].obj["metadata"]["name"]
    cluster.objects[("Pod", "research", name)]["spec"]["nodeName"] = "gpu-node-1"
    assert delete(cluster, "Pod", name, "alice", INTERN, stays=True).allowed
    assert not pods_of(cluster, rs, 1)[0].allowed, "the first pod still runs out its grace period"
    # its containers have stopped: the kubelet removes the object (grace 0)
    body = review(None, old=cluster.get("Pod", name), user="system:node:gpu-node-1", groups=("system:nodes",),
                  operation="DELETE").body()
    body["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    assert cluster.service.validate(body)["response"]["allowed"]
    del cluster.objects[("Pod", "research", name)]
    assert pods_of(cluster, rs, 1)[0].allowed, "the replacement fits once the pod is gone"
    assert held(store) == {"alice": 8}


def test_a_pod_never_scheduled_or_deleted_at_once_frees_its_gpus_with_its_delete(cluster, store):
    made = cluster.create(deployment("serve"), "alice", INTERN)
    rs = cluster.replicaset_of(made.obj, replicas=1).obj
    pending = pods_of(cluster, rs, 1)[0].obj["metadata"]["name"]
    assert delete(cluster, "Pod", pending, "alice", INTERN).allowed  # no node: the API server removes it
    forced = pods_of(cluster, rs, 1)[0].obj["metadata"]["name"]
    cluster.objects[("Pod", "research", forced)]["spec"]["nodeName"] = "gpu-node-1"
    old = cluster.get("Pod", forced)
    body = review(None, old=old, user="alice", groups=INTERN, operation="DELETE").body()
    body["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    assert cluster.service.validate(body)["response"]["allowed"]  # kubectl delete --grace-period=0 --force
    del cluster.objects[("Pod", "research", forced)]
    # The object is gone, but the kubelet stops its containers with the pod's grace period
    # (30 s here): its record holds the root's 8 GPUs until then.
    assert not pods_of(cluster, rs, 1)[0].allowed
    reconcile(cluster, store, now=time.time() + 31)  # the controller, once that grace is over
    assert pods_of(cluster, rs, 1)[0].allowed
    assert held(store) == {"alice": 8}


def test_a_gpu_pods_grace_period_is_bounded_on_launch_and_on_edit(cluster, store):
    """limits.yaml max_gpu_termination_grace_seconds: what runs on after a delete (graceful, or
    forced: the record is then held for the pod's grace period) is bounded."""
    dep = deployment("serve")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 365 * 24 * 3600
    answer = cluster.create(dep, "alice", INTERN)
    assert not answer.allowed and "terminationGracePeriodSeconds" in answer.message
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 600
    made = cluster.create(dep, "alice", INTERN)
    assert made.allowed, made.message
    longer = copy.deepcopy(made.obj)
    longer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 7200
    assert not cluster.update(longer, "alice", INTERN).allowed
    cpu = make_pod(gpus=0).named("research", "cpu").obj()
    cpu["spec"]["terminationGracePeriodSeconds"] = 7200
    assert cluster.create(cpu, "alice", INTERN).allowed, "pods without GPUs hold nothing past their delete"


def test_orphaning_a_cronjob_keeps_its_jobs_charged(cluster, store):
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [container(8)]}}}}}}
    made = cluster.create(cron, "alice", INTERN).obj
    assert cluster.job_of(made).allowed
    assert delete(cluster, "CronJob", "nightly", "alice", INTERN, propagation="Orphan").allowed
    assert held(store) == {"alice": 8}


# ================================================================== labels, ownerReferences, adoption


def test_relabelling_a_pod_out_of_its_replicaset_does_not_buy_a_free_replacement(cluster, store):
    _, rs = _deployment_with_a_pod(cluster)
    for _ in range(2):
        [pod] = [copy.deepcopy(o) for (k, _, _), o in cluster.objects.items()
                 if k == "Pod" and o["metadata"].get("ownerReferences")]
        name = pod["metadata"]["name"]
        pod["metadata"]["labels"] = {"quarantined": "yes"}  # no longer matches the selector
        if not cluster.update(pod, "alice", INTERN).allowed:
            break
        released = cluster.get("Pod", name)  # the ReplicaSet controller releases it ...
        released["metadata"]["ownerReferences"] = []
        cluster.update(released, REPLICASET_CONTROLLER, SYSTEM)
        if not pods_of(cluster, rs, 1)[0].allowed:  # ... and replaces it
            break
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_orphaning_a_replicaset_does_not_let_its_deployment_run_twice_on_one_charge(cluster, store):
    dep, rs = _deployment_with_a_pod(cluster)
    deleted = delete(cluster, "ReplicaSet", rs["metadata"]["name"], "alice", INTERN, propagation="Orphan")
    if deleted.allowed:
        for (kind, _, _), pod in cluster.objects.items():  # the garbage collector orphans the pods
            if kind == "Pod":
                pod["metadata"]["ownerReferences"] = []
        # the deployment controller makes the ReplicaSet again, and it makes a pod again
        again = cluster.child(dep, "apps/v1", "ReplicaSet", rs["spec"]["template"],
                              copy.deepcopy(rs["spec"]), DEPLOYMENT_CONTROLLER, name=rs["metadata"]["name"])
        if again.allowed:
            pods_of(cluster, again.obj, 1)
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_a_pod_squatting_on_the_name_of_someone_elses_statefulset_pod_is_not_adopted_into_it(cluster, store):
    squat = make_pod(gpus=1).named("research", "db-0").obj()
    squat["metadata"]["labels"] = {"app": "db"}
    assert cluster.create(squat, "alice", INTERN).allowed  # before bob's StatefulSet exists
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "research"},
           "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container(8)]}}}}
    made = cluster.create(sts, "bob", RESEARCHER).obj
    # the StatefulSet controller adopts the orphan pod that matches its selector and ordinal name
    adopted = cluster.get("Pod", "db-0")
    adopted["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                               "controller": True, "uid": made["metadata"]["uid"]}]
    answer = cluster.update(adopted, STATEFULSET_CONTROLLER, SYSTEM)
    assert not answer.allowed, "alice's pod now serves as replica 0 of bob's StatefulSet"


def test_an_intern_cannot_attach_a_pod_to_someone_elses_replicaset(cluster, store):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    pod = make_pod(gpus=1).named("research", "cuckoo").obj()
    pod["metadata"]["labels"] = dict(rs["spec"]["template"]["metadata"]["labels"])
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                           "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"]}]
    # bob's ReplicaSet would count it as one of its replicas (and delete one of bob's pods)
    answer = cluster.create(pod, "alice", INTERN)
    assert not answer.allowed


def test_an_interns_replicaset_cannot_adopt_and_delete_someone_elses_pod(cluster, store):
    bobs = make_pod(gpus=8).named("research", "bobs").obj()
    bobs["metadata"]["labels"] = {"app": "shared"}
    assert cluster.create(bobs, "bob", RESEARCHER).allowed
    grab = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "grab", "namespace": "research"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "shared"}},
                     "template": {"metadata": {"labels": {"app": "shared"}}, "spec": {"containers": [container(1)]}}}}
    rs = cluster.create(grab, "alice", INTERN).obj
    adopted = cluster.get("Pod", "bobs")
    adopted["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                               "name": "grab", "uid": rs["metadata"]["uid"]}]
    adopt = cluster.update(adopted, REPLICASET_CONTROLLER, SYSTEM)
    kill = delete(cluster, "Pod", "bobs", REPLICASET_CONTROLLER, SYSTEM)  # replicas: 0, so it deletes the pod
    assert not (adopt.allowed and kill.allowed), "alice's ReplicaSet killed bob's pod"


def test_a_persons_pod_pointing_at_their_own_tiny_workload_is_charged_as_a_launch(cluster, store):
    tiny = cluster.create(deployment("tiny", gpus=1), "alice", INTERN).obj
    pod = make_pod(gpus=8).named("research", "big").obj()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "controller": True,
                                           "name": "tiny", "uid": tiny["metadata"]["uid"]}]
    assert cluster.create(pod, "alice", INTERN).allowed
    assert held(store) == {"alice": 9}
    pod["metadata"]["name"] = "bigger"
    assert not cluster.create(pod, "alice", INTERN).allowed  # 17 > 16


def test_a_controllers_child_belongs_to_the_uid_its_reference_carries_whatever_kind_and_name_say(cluster, store):
    cluster.create(deployment("alices", gpus=1), "alice", INTERN)
    job = cluster.create(make_pytorchjob(workers=1, gpus=8).named("research", "llm").obj(), "bob", RESEARCHER).obj
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "llm-worker-0", "namespace": "research",
           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "alices", "controller": True,
                                "uid": job["metadata"]["uid"]}]}, "spec": template(8)["spec"]}
    assert cluster.create(pod, TRAINING_OPERATOR, SYSTEM).allowed
    assert records(store)["llm-worker-0"].owner == "bob"
    assert held(store) == {"alice": 1, "bob": 16}


def test_a_stale_child_of_a_deleted_parent_is_not_charged_to_the_new_owner_of_the_name(cluster, store):
    old = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    assert cluster.delete("Deployment", "serve", "bob", RESEARCHER).allowed
    assert cluster.create(deployment("serve"), "alice", INTERN).allowed
    stale = cluster.replicaset_of(old, replicas=1)  # the deployment controller, still on bob's old UID
    if stale.allowed:
        assert records(store)[stale.obj["metadata"]["name"]].owner != "alice"
    assert held(store) == {"alice": 8}


# ================================================================== names the ledger already holds


def test_creating_an_existing_workload_again_does_not_wipe_its_charge(cluster, store):
    assert cluster.create(deployment("serve"), "alice", INTERN).allowed
    again = deployment("serve", replicas=0)
    again["metadata"]["uid"] = "uid-of-a-create-the-api-server-refuses"
    submit(cluster, again, "alice", INTERN)  # `kubectl create` twice: AlreadyExists after admission
    assert held(store) == {"alice": 8}
    # the running Deployment's ReplicaSet still descends from alice's record
    rs = cluster.replicaset_of(cluster.get("Deployment", "serve"), replicas=1)
    assert rs.allowed and records(store)[rs.obj["metadata"]["name"]].owner == "alice"


def test_a_controllers_create_on_a_name_held_for_a_running_pod_does_not_take_its_record(cluster, store):
    assert cluster.create(make_pod(gpus=8).named("research", "a-0").obj(), "alice", INTERN).allowed
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "a", "namespace": "research"},
           "spec": {"replicas": 1, "serviceName": "a", "selector": {"matchLabels": {"app": "a"}},
                    "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [container(1)]}}}}
    made = cluster.create(sts, "alice", INTERN).obj
    assert held(store) == {"alice": 9}
    # the StatefulSet controller creates pod a-0; the API server then answers AlreadyExists
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "a-0", "namespace": "research", "uid": "uid-refused", "labels": {"app": "a"},
        "annotations": dict(made["spec"]["template"]["metadata"]["annotations"]),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "a", "controller": True,
                             "uid": made["metadata"]["uid"]}]}, "spec": template(1)["spec"]}
    submit(cluster, pod, STATEFULSET_CONTROLLER, SYSTEM)
    assert held(store) == {"alice": 9}
    assert records(store)["a-0"].owner == "alice"


# ================================================================== controllers making more than is charged


def test_an_operator_may_not_create_more_gpus_in_all_than_the_workload_is_charged_for(cluster, store):
    job = cluster.create(make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj(), "alice", INTERN).obj
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    answers = [cluster.pod_of(job, worker, TRAINING_OPERATOR) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False], "README: no more GPUs in all than the root's"


def test_a_rayservice_upgrade_cannot_run_two_clusters_on_one_charge(cluster, store):
    svc = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "svc", "namespace": "research"},
           "spec": {"serveConfigV2": "applications: []", "rayClusterConfig": ray_cluster_spec(8)}}
    # an intern's 8-GPU cluster is 16 GPUs as a RayService: over her per-workload limit
    assert not cluster.create(svc, "alice", INTERN).allowed
    made = cluster.create(svc, "bob", RESEARCHER).obj
    spec = made["spec"]["rayClusterConfig"]
    first = cluster.child(made, "ray.io/v1", "RayCluster", {}, copy.deepcopy(spec), KUBERAY, name="svc-a")
    assert first.allowed
    changed = cluster.get("RayService", "svc")
    changed["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = "v2"
    assert cluster.update(changed, "bob", RESEARCHER).allowed
    # KubeRay's zero-downtime upgrade: a pending cluster beside the serving one until it is ready
    second = cluster.child(made, "ray.io/v1", "RayCluster", {}, copy.deepcopy(changed["spec"]["rayClusterConfig"]),
                           KUBERAY, name="svc-b")
    assert not second.allowed or charged(store) >= 16, f"two 8-GPU clusters run, {held(store)} charged"


def test_a_scale_of_a_registered_kind_counts_every_pod_a_replica_brings(policy_dir, store):
    trainer = {"group": "example.com", "kind": "Trainer", "resource": "trainers",
               "pods": [{"path": "/spec/worker/template", "shape": "template",
                         "replicas": ["/spec/replicas"], "times": ["/spec/worker/size"]}]}
    cl = cluster_with(policy_dir, store, kinds=[trainer])
    obj = {"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t", "namespace": "research"},
           "spec": {"replicas": 1, "worker": {"size": 4, "template": template(2)}}}
    assert cl.create(obj, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}
    # the CRD's scale subresource moves spec.replicas: 2 replicas are 2 x 4 pods x 2 GPUs
    response = scale(cl, "Trainer", "t", "example.com", "trainers", 1, 2, HPA, SYSTEM)
    assert not response["allowed"], f"16 GPUs for an intern's workload; ledger now {held(store)}"


def test_each_concurrent_workflow_of_a_cronworkflow_is_charged(policy_dir, store):
    cl = cluster_with(policy_dir, store, actors={ARGO: {"creates": ["Pod", "argoproj.io/Workflow"]}})
    workflow_spec = {"entrypoint": "main", "templates": [{"name": "main", "container": container(8)}]}
    cron = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Allow", "workflowSpec": workflow_spec}}
    made = cl.create(cron, "alice", INTERN)
    assert made.allowed
    runs = [cl.child(made.obj, "argoproj.io/v1alpha1", "Workflow", {}, copy.deepcopy(workflow_spec), ARGO,
                     name=f"nightly-{i}") for i in range(3)]
    assert not all(r.allowed for r in runs), "three 8-GPU workflows at once for an intern capped at 16"


# ================================================================== parents the ledger does not know


def test_a_trainjob_whose_gpus_come_from_its_runtime_cannot_start_an_uncharged_jobset(cluster, store):
    trainjob = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                "metadata": {"name": "tj", "namespace": "research"},
                "spec": {"runtimeRef": {"name": "torch-distributed-gpu"},
                         "trainer": {"numNodes": 4, "resourcesPerNode": {"limits": {"cpu": "8"}}}}}
    made = cluster.create(trainjob, "alice", INTERN)
    assert made.allowed
    # the runtime's node template asks for 8 GPUs a node; the trainer controller renders the JobSet
    jobset_spec = {"replicatedJobs": [{"name": "node", "replicas": 1, "template": {"spec": {
        "parallelism": 4, "completions": 4, "template": {"spec": {
            "restartPolicy": "Never", "containers": [container(8, name="node")]}}}}}]}
    answer = cluster.child(made.obj, "jobset.x-k8s.io/v1alpha2", "JobSet", {}, jobset_spec, TRAINER, name="tj")
    assert not answer.allowed, f"32 GPUs started for alice's TrainJob, charged: {held(store)}"


def test_an_autoscaler_cannot_grow_a_workload_the_ledger_holds_for_nobody(cluster, store):
    before = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "legacy", "namespace": "research", "uid": "uid-from-before-the-gateway"}}
    rs = cluster.child(before, "apps/v1", "ReplicaSet", template(8), {"replicas": 1, "template": template(8)},
                       DEPLOYMENT_CONTROLLER, name="legacy-5d8f")
    assert rs.allowed  # unowned, audited
    # alice points an HPA (or a KEDA ScaledObject) at it
    answer = cluster.scale("ReplicaSet", "legacy-5d8f", 100, HPA, SYSTEM)
    assert not answer.allowed, "800 GPUs for nobody"


def test_a_researcher_may_delete_a_gpu_pod_the_ledger_holds_for_nobody(cluster, store):
    """README: what controllers make for an object the ledger does not know is unowned, and
    researchers, leads and admins may change it."""
    old_rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": "legacy", "namespace": "research", "uid": "from-before-the-gateway"},
              "spec": {"replicas": 1, "template": template(8)}}
    pod = cluster.pod_of(old_rs, old_rs["spec"]["template"], REPLICASET_CONTROLLER).obj
    assert not cluster.delete("Pod", pod["metadata"]["name"], "alice", INTERN).allowed
    answer = cluster.delete("Pod", pod["metadata"]["name"], "bob", RESEARCHER)
    assert answer.allowed, answer.message


# ================================================================== autoscalers and operators people point


def test_an_hpa_an_intern_creates_cannot_scale_someone_elses_deployment(cluster, store):
    assert cluster.create(deployment("serve"), "bob", RESEARCHER).allowed
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "grow-bob", "namespace": "research"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serve"},
                    "minReplicas": 30, "maxReplicas": 30}}
    made = cluster.create(hpa, "alice", INTERN)
    grown = cluster.scale("Deployment", "serve", 30, HPA, SYSTEM)
    assert not (made.allowed and grown.allowed), f"alice spent bob's quota: {held(store)}"


def test_a_rayjob_cannot_run_on_someone_elses_raycluster_by_selector(cluster, store):
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "bobs", "namespace": "research"},
           "spec": ray_cluster_spec(8, replicas=4)}
    assert cluster.create(ray, "bob", RESEARCHER).allowed
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "hitchhike", "namespace": "research"},
           "spec": {"entrypoint": "python train.py", "clusterSelector": {"ray.io/cluster": "bobs"}}}
    answer = cluster.create(job, "alice", INTERN)
    assert not answer.allowed, "alice's job runs on bob's 32 GPUs"


def test_the_hpa_scaling_a_researchers_statefulset_created_at_zero_within_caps_is_allowed(cluster, store):
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "research"},
           "spec": {"replicas": 0, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container(8)]}}}}
    made = cluster.create(sts, "bob", RESEARCHER).obj
    assert scaled(cluster, "StatefulSet", "db", 4, HPA, SYSTEM).allowed
    assert held(store) == {"bob": 32}
    grown = cluster.get("StatefulSet", "db")
    for _ in range(4):
        assert cluster.pod_of(grown, made["spec"]["template"], STATEFULSET_CONTROLLER).allowed
    assert held(store) == {"bob": 32}


# ================================================================== identities anyone could borrow


@pytest.mark.parametrize("user", [
    "system:serviceaccount:research:horizontal-pod-autoscaler",
    "system:serviceaccount:research:kueue-controller-manager",
    "system:serviceaccount:research:keda-operator",
    "system:serviceaccount:research:deployment-controller",
    "system:serviceaccount:kueue-system-x:kueue-controller-manager",
    "system:node",
    "system:node:",
    "system:nodes:gpu-1",
    "oidc:system:node:gpu-1",
])
def test_lookalike_identities_cannot_scale_or_fill_someone_elses_workload(cluster, store, user):
    dep = cluster.create(deployment("parked", replicas=0), "bob", RESEARCHER).obj
    groups = ("system:serviceaccounts", "system:serviceaccounts:research")
    assert not cluster.scale("Deployment", "parked", 4, user, groups).allowed
    rs = copy.deepcopy(dep["spec"]["template"])
    spec = {"replicas": 1, "selector": dep["spec"]["selector"], "template": rs}
    assert not cluster.child(dep, "apps/v1", "ReplicaSet", rs, spec, user, name="parked-x").allowed
    pod = cluster.child(dep, "v1", "Pod", rs, copy.deepcopy(rs["spec"]), user)
    assert not pod.allowed
    assert held(store) == {}


def test_claimed_system_groups_do_not_raise_an_interns_role(cluster, store):
    groups = (*INTERN, "system:masters", "system:nodes", "system:serviceaccounts:kube-system")
    answer = cluster.create(deployment("big", gpus=8, replicas=2), "alice", groups)
    assert not answer.allowed and "role intern" in answer.message


# ================================================================== owner and team annotations on UPDATE


def test_renaming_the_owner_on_the_root_and_every_template_at_once_is_still_a_reassignment(cluster, service, store):
    dep = cluster.create(deployment("serve"), "alice", INTERN).obj
    new = copy.deepcopy(dep)
    new["metadata"]["annotations"][OWNER] = "bob"
    new["spec"]["template"]["metadata"]["annotations"][OWNER] = "bob"
    assert not cluster.update(new, "alice", INTERN).allowed  # with the mutating webhook
    body = review(new, old=dep, user="alice", groups=INTERN, operation="UPDATE").body()
    assert not service.validate(body)["response"]["allowed"]  # without it
    assert held(store) == {"alice": 8}


def test_an_intern_cannot_hand_a_controllers_replicaset_to_someone_else_by_annotation(cluster, store):
    dep = cluster.create(deployment("serve"), "alice", INTERN).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    rs["metadata"].setdefault("annotations", {})[OWNER] = "bob"
    rs["spec"]["template"]["metadata"]["annotations"][OWNER] = "bob"
    assert not cluster.update(rs, "alice", INTERN).allowed
    assert records(store)[rs["metadata"]["name"]].owner == "alice"


def test_a_cpu_workload_turned_gpu_cannot_name_someone_else_as_owner(cluster, store):
    cpu = make_deployment(gpus=0).named("research", "web").obj()
    assert cluster.create(cpu, "alice", INTERN).allowed
    gpu = cluster.get("Deployment", "web")
    gpu["spec"]["template"]["spec"]["containers"] = [container(8)]
    gpu["metadata"]["annotations"] = {OWNER: "bob"}
    gpu["spec"]["template"]["metadata"]["annotations"] = {OWNER: "bob"}
    body = review(gpu, old=cluster.get("Deployment", "web"), user="alice", groups=INTERN, operation="UPDATE").body()
    assert not cluster.service.validate(body)["response"]["allowed"]
    answer = cluster.update(gpu, "alice", INTERN)
    if answer.allowed:
        assert records(store)["web"].owner == "alice"


def test_an_intern_cannot_raise_the_priority_class_of_a_running_workload(cluster, store):
    assert cluster.create(deployment("serve"), "alice", INTERN).allowed
    assert not cluster.create(
        {**deployment("direct"), "spec": {**deployment("direct")["spec"], "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"priorityClassName": "high", "containers": [container(8)]}}}}, "alice", INTERN).allowed
    edited = cluster.get("Deployment", "serve")
    edited["spec"]["template"]["spec"]["priorityClassName"] = "high"  # preempts others' GPU pods
    answer = cluster.update(edited, "alice", INTERN)
    assert not answer.allowed, "interns may use priority classes none or low only"


def test_an_intern_cannot_take_a_high_kueue_priority_with_a_label(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "jump", "namespace": "research",
        "labels": {"kueue.x-k8s.io/queue-name": "gpu", "kueue.x-k8s.io/priority-class": "high"}},
        "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}
    answer = cluster.create(job, "alice", INTERN)
    assert not answer.allowed, "a Kueue WorkloadPriorityClass preempts others' GPU jobs as a priority class does"
    assert "priority class high" in answer.message
    job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "low"
    assert cluster.create(job, "alice", INTERN).allowed, "a class her role may use"


def test_an_intern_cannot_raise_a_kueue_priority_label_on_a_template_or_later(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "jump", "namespace": "research"},
           "spec": {"suspend": True, "template": {
               "metadata": {"labels": {"kueue.x-k8s.io/priority-class": "high"}},
               "spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}
    assert not cluster.create(job, "alice", INTERN).allowed
    del job["spec"]["template"]["metadata"]
    made = cluster.create(job, "alice", INTERN)
    assert made.allowed
    raised = copy.deepcopy(made.obj)
    raised["metadata"].setdefault("labels", {})["kueue.x-k8s.io/priority-class"] = "high"
    assert not cluster.update(raised, "alice", INTERN).allowed


# ================================================================== GPUs that are not resource requests


def test_a_pod_asking_for_no_gpus_cannot_see_every_gpu_through_nvidia_visible_devices(cluster, store):
    pod = make_pod(gpus=0).named("research", "peek").obj()
    pod["spec"]["containers"][0]["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    pod["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    answer = cluster.create(pod, "mallory", ())
    assert not answer.allowed, "the NVIDIA container runtime exposes every GPU of the node to it, charged to nobody"


def test_a_gpu_from_a_dra_resource_claim_is_not_counted_as_no_gpus(cluster, store):
    pod = make_pod(gpus=0).named("research", "dra").obj()
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"}]
    pod["spec"]["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    answer = cluster.create(pod, "mallory", ())
    assert not answer.allowed, "a person with no GPU role runs a GPU claimed through DRA"


# ================================================================== registered and unknown kinds


@pytest.mark.parametrize("obj", [
    {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
     "metadata": {"name": "isvc", "namespace": "research"},
     "spec": {"predictor": {"minReplicas": 1, "model": {"modelFormat": {"name": "pytorch"},
                                                       "resources": {"limits": {"nvidia.com/gpu": 1}}}}}},
    {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
     "metadata": {"name": "spark", "namespace": "research"},
     "spec": {"sparkConf": {"spark.executor.resource.gpu.amount": "1"}, "driver": {"cores": 1},
              "executor": {"instances": 2}}},
    {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf", "namespace": "research"},
     "spec": {"entrypoint": "fan", "templates": [
         {"name": "fan", "steps": [[{"name": "each", "template": "gpu", "withParam": "{{inputs.parameters.list}}"}]]},
         {"name": "gpu", "container": container(1)}]}},
    {"apiVersion": "kubeflow.org/v1", "kind": "MXJob", "metadata": {"name": "mx", "namespace": "research"},
     "spec": {"accelerators": [{"resource": "nvidia.com/gpu", "count": 64}]}},
], ids=["kserve-without-max-replicas", "spark-gpus-in-sparkconf", "argo-unbounded-fan-out", "unknown-kind-gpu-list"])
def test_gpus_an_intern_hides_where_they_cannot_be_counted_are_refused(cluster, store, obj):
    answer = cluster.create(obj, "alice", INTERN)
    assert not answer.allowed
    assert held(store) == {}


def test_the_argo_workflow_controller_may_create_the_pods_of_an_admitted_workflow(cluster, store):
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf", "namespace": "research"},
          "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": container(8)}]}}
    made = cluster.create(wf, "alice", INTERN)
    assert made.allowed  # the default bundle registers the kind ...
    pod = cluster.child(made.obj, "v1", "Pod", {}, {"containers": [container(8)]}, ARGO, name="wf-main-1")
    assert pod.allowed, f"... but not the controller that runs it: {pod.message}"


@pytest.mark.skip(reason=OPEN['test_the_ray_autoscaler_may_move_workers_within_the_counted_max_replicas'])
def test_the_ray_autoscaler_may_move_workers_within_the_counted_max_replicas(cluster, store):
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc", "namespace": "research"},
           "spec": ray_cluster_spec(4, autoscaling=True, max_replicas=2)}
    assert cluster.create(ray, "alice", INTERN).allowed
    assert held(store) == {"alice": 8}
    # KubeRay's autoscaler sidecar runs under the head pod's service account, the cluster's name
    up = cluster.get("RayCluster", "rc")
    up["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    answer = cluster.update(up, "system:serviceaccount:research:rc",
                            ("system:serviceaccounts", "system:serviceaccounts:research"))
    assert answer.allowed, answer.message
    assert held(store) == {"alice": 8}


# ================================================================== touching someone else's children


def test_an_intern_cannot_scale_or_delete_the_replicaset_of_someone_elses_deployment(cluster, store):
    dep = cluster.create(deployment("serve", replicas=2), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=2).obj
    name = rs["metadata"]["name"]
    assert not cluster.scale("ReplicaSet", name, 0, "eve", EVE).allowed
    assert not cluster.delete("ReplicaSet", name, "eve", EVE).allowed
    [pod] = pods_of(cluster, rs, 1)
    pod_name = pod.obj["metadata"]["name"]
    assert not delete(cluster, "Pod", pod_name, "eve", EVE).allowed
    assert not evict(cluster, pod_name, "eve", EVE)["allowed"]
    debug = pod.obj | {"spec": {**pod.obj["spec"], "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    body = review(debug, old=pod.obj, user="eve", groups=EVE, operation="UPDATE",
                  sub_resource="ephemeralcontainers").body()
    assert not cluster.service.validate(body)["response"]["allowed"]
    assert held(store) == {"bob": 16}


# ================================================================== dry runs


def test_dry_runs_reserve_and_release_nothing(cluster, store):
    assert cluster.create(deployment("serve"), "alice", INTERN).allowed
    dep = cluster.get("Deployment", "serve")
    assert submit(cluster, None, "alice", INTERN, old=dep, operation="DELETE", dry_run=True)["allowed"]
    assert submit(cluster, make_pod(gpus=8).named("research", "p").obj(), "alice", INTERN, dry_run=True)["allowed"]
    smaller = copy.deepcopy(dep)
    smaller["spec"]["replicas"] = 0
    assert submit(cluster, smaller, "alice", INTERN, old=dep, operation="UPDATE", dry_run=True)["allowed"]
    assert held(store) == {"alice": 8}
    assert {r.name: r.gpus for r in store.reservations()} == {"serve": 8}
    # and the real launches still see the 8 held
    assert cluster.create(deployment("more"), "alice", INTERN).allowed
    assert not cluster.create(deployment("most"), "alice", INTERN).allowed


# ================================================================== legitimate flows


def test_a_deployment_rollout_with_the_default_surge_is_admitted_and_charged_once(cluster, store):
    dep = cluster.create(deployment("serve", replicas=4, surge=None), "bob", RESEARCHER).obj  # 4 + 1 surge
    assert held(store) == {"bob": 40}
    old_rs = cluster.replicaset_of(dep, replicas=4).obj
    assert all(a.allowed for a in pods_of(cluster, old_rs, 4))
    changed = cluster.get("Deployment", "serve")
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/lab/train:2"
    rolled = cluster.update(changed, "bob", RESEARCHER)
    assert rolled.allowed
    new_rs = cluster.replicaset_of(rolled.obj, replicas=1)  # the surge pod first
    assert new_rs.allowed
    assert pods_of(cluster, new_rs.obj, 1)[0].allowed
    old = cluster.get("ReplicaSet", old_rs["metadata"]["name"])
    old["spec"]["replicas"] = 3
    assert cluster.update(old, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    grown = cluster.get("ReplicaSet", new_rs.obj["metadata"]["name"])
    grown["spec"]["replicas"] = 2
    assert cluster.update(grown, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    assert held(store) == {"bob": 40}


def test_the_job_controller_replaces_a_failed_pod_of_a_job(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "research"},
           "spec": {"parallelism": 2, "backoffLimit": 3,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}
    made = cluster.create(job, "bob", RESEARCHER).obj
    first = pods_of(cluster, made, 2, JOB_CONTROLLER)
    assert all(a.allowed for a in first)
    # one pod fails (status only: it stays, holding no GPU); the Job controller makes another,
    # which fits once the gateway's controller has seen the failure
    failed = first[0].obj["metadata"]["name"]
    cluster.objects[("Pod", "research", failed)]["status"] = {"phase": "Failed"}
    assert not pods_of(cluster, made, 1, JOB_CONTROLLER)[0].allowed, "a third 8-GPU pod of a 16-GPU Job"
    reconcile(cluster, store)
    assert pods_of(cluster, made, 1, JOB_CONTROLLER)[0].allowed
    assert held(store) == {"bob": 16}


def reconcile(cluster: Cluster, store: SQLiteStore, *, now: float | None = None) -> None:
    """One pass of the gateway's controller over the pods the cluster lists (at `now`)."""
    pods = [view for (kind, _, _), obj in cluster.objects.items()
            if kind == "Pod" and (view := read_pod(obj, GpuMatcher())) is not None]
    store.reconcile(pods, now=time.time() if now is None else now,
                    actor=Actor("system:serviceaccount:gpu-gateway:controller"))


def test_the_hpa_of_an_elastic_pytorchjob_scales_it_within_max_replicas(cluster, store):
    job = make_pytorchjob(workers=1, gpus=8).named("research", "elastic").obj()
    job["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 4}
    assert cluster.create(job, "bob", RESEARCHER).allowed
    assert held(store) == {"bob": 40}
    assert scaled(cluster, "PyTorchJob", "elastic", 3, HPA, SYSTEM).allowed
    assert scaled(cluster, "PyTorchJob", "elastic", 1, HPA, SYSTEM).allowed
    assert held(store) == {"bob": 40}
    assert not scaled(cluster, "PyTorchJob", "elastic", 40, HPA, SYSTEM).allowed


def test_a_cronjobs_job_edited_past_the_per_workload_limit_is_refused(cluster, store):
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [container(8)]}}}}}}
    made = cluster.create(cron, "alice", INTERN).obj
    job = cluster.job_of(made).obj
    job["spec"]["parallelism"] = 2
    assert not cluster.update(job, "alice", INTERN).allowed
    assert not cluster.update(job, CRONJOB_CONTROLLER, SYSTEM).allowed
    assert held(store) == {"alice": 8}


def test_people_without_a_gpu_role_cannot_park_a_cronjob_or_daemonset_for_controllers_to_run(cluster, store):
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "research"},
            "spec": {"schedule": "@hourly", "suspend": True, "jobTemplate": {"spec": {"parallelism": 0, "template": {
                "spec": {"restartPolicy": "Never", "containers": [container(8)]}}}}}}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d", "namespace": "research"},
          "spec": {"selector": {"matchLabels": {"app": "d"}},
                   "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [container(8)]}}}}
    assert not cluster.create(cron, "mallory", ()).allowed
    assert not cluster.create(ds, "mallory", ()).allowed
    assert store.reservations() == []
