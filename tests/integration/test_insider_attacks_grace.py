"""Insider attacks on the charge of GPUs that still run after their object is deleted, forced
out, scaled down or left by its root, and on the charge coming down again once they are gone.

An intern (`gpu-interns`, `team:vision`: 8 GPUs per workload, 16 at once) deletes, force
deletes, evicts, scales down and up, and lets controllers replace pods under the same names,
so that containers still running on a node (SIGTERM trapped for the pod's grace period) are
charged to nobody, or so that a replacement runs beside them on one charge. The other
direction is checked too: once what ran is really gone (the kubelet's final DELETE from the
pod's own node, or the gateway's controller seeing it gone) the owner gets the quota back.

Each test is one attempt, modelled on what the real components send (identities, controller
ownerReferences with UIDs, deletion timestamps, grace periods), driven through the real
AdmissionService by tests/cluster_sim.py. A test marked xfail (strict) is a way in the gateway
does not close yet, named in its reason; the others record attempts it stops.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from cluster_sim import (
    DEPLOYMENT_CONTROLLER,
    GC,
    HPA,
    JOB_CONTROLLER,
    REPLICASET_CONTROLLER,
    STATEFULSET_CONTROLLER,
    SYSTEM,
    TRAINING_OPERATOR,
    Cluster,
)
from conftest import INTERN, container, make_pod, make_pytorchjob, review

from gateway.service import AdmissionService
from integration.test_insider_attacks import (
    charged,
    delete,
    deployment,
    held,
    pods_of,
    reconcile,
    records,
    running_gpus,
    scaled,
    submit,
)
from integration.test_insider_attacks_more import (
    GRACE,
    KUBELET,
    force_delete,
    graceful_delete,
    long_grace,
    running_pod_of,
    scheduled,
)

POD_GC = "system:serviceaccount:kube-system:pod-garbage-collector"
TTL_CONTROLLER = "system:serviceaccount:kube-system:ttl-after-finished-controller"
DAEMONSET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"
WITHIN_GRACE = 120  # seconds after a force delete: past the controller's forget grace, well inside GRACE


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


# ------------------------------------------------------------------ helpers


def kubelet_final_delete(cluster: Cluster, name: str) -> None:
    """The pod's own kubelet, once its containers have stopped: DELETE with grace 0."""
    assert force_delete(cluster, name, *KUBELET)


def delete_with(cluster: Cluster, kind: str, name: str, user: str, groups: tuple[str, ...],
                **options: Any) -> bool:
    """A DELETE carrying DeleteOptions `options`; the object stays in `cluster` (the caller
    carries out what the API server then does)."""
    body = review(None, old=cluster.get(kind, name), user=user, groups=groups, operation="DELETE").body()
    body["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", **options}
    return bool(cluster.service.validate(body)["response"]["allowed"])


def mark_deleting(cluster: Cluster, kind: str, name: str, grace: int, *, finalizers: list[str] | None = None) -> None:
    """The API server's side of a DELETE that leaves the object (grace left, or finalizers)."""
    meta = cluster.objects[(kind, "research", name)]["metadata"]
    meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    meta["deletionGracePeriodSeconds"] = grace
    if finalizers is not None:
        meta["finalizers"] = finalizers


def gpu_template(gpus: int, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": GRACE, "containers": [container(gpus)]}}


def statefulset(name: str, *, gpus: int = 8, replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "research"},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": gpu_template(gpus, {"app": name})}}


def sts_pod(cluster: Cluster, sts: dict[str, Any], ordinal: int) -> Any:
    """The StatefulSet controller's pod `<name>-<ordinal>` (a fixed name, made again after a delete)."""
    name = f"{sts['metadata']['name']}-{ordinal}"
    return cluster.child(sts, "v1", "Pod", sts["spec"]["template"], copy.deepcopy(sts["spec"]["template"]["spec"]),
                         STATEFULSET_CONTROLLER, name=name,
                         labels={"statefulset.kubernetes.io/pod-name": name})


def audit(store: Any) -> list[dict[str, Any]]:
    return list(store.audit_rows())


# ================================================================== same name, old containers still running


def test_a_statefulset_pod_force_deleted_is_not_made_again_beside_its_running_containers(cluster, store):
    """The well-known StatefulSet hazard: `kubectl delete pod db-0 --force --grace-period=0`
    removes the object, the controller makes db-0 again at once, and the old containers run on."""
    sts = cluster.create(statefulset("db"), "alice", INTERN)
    assert sts.allowed, sts.message
    first = sts_pod(cluster, sts.obj, 0)
    assert first.allowed, first.message
    scheduled(cluster, "db-0")
    assert force_delete(cluster, "db-0", "alice", INTERN)
    ghost = 8
    again = sts_pod(cluster, sts.obj, 0)
    running = running_gpus(cluster) + ghost
    assert not again.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"
    assert held(store) == {"alice": 8}


def test_a_statefulset_pod_is_made_again_once_the_forced_ones_grace_is_over(cluster, store):
    sts = cluster.create(statefulset("db"), "alice", INTERN).obj
    assert sts_pod(cluster, sts, 0).allowed
    scheduled(cluster, "db-0")
    assert force_delete(cluster, "db-0", "alice", INTERN)
    reconcile(cluster, store, now=time.time() + GRACE + 1)  # the old containers are surely gone
    again = sts_pod(cluster, sts, 0)
    assert again.allowed, f"the StatefulSet stays one pod short for good: {again.message}"
    assert records(store)["db-0"].owner == "alice"
    assert held(store) == {"alice": 8}, "the old pod's record and the new one's are one charge, not two"


def test_a_statefulset_pod_deleted_gracefully_comes_back_under_its_name_once_the_kubelet_removed_it(cluster, store):
    sts = cluster.create(statefulset("db"), "alice", INTERN).obj
    assert sts_pod(cluster, sts, 0).allowed
    scheduled(cluster, "db-0")
    assert graceful_delete(cluster, "db-0", "alice", INTERN)
    assert held(store) == {"alice": 8}
    kubelet_final_delete(cluster, "db-0")
    again = sts_pod(cluster, sts, 0)
    assert again.allowed, again.message
    assert records(store)["db-0"].owner == "alice" and records(store)["db-0"].gpus == 8
    assert held(store) == {"alice": 8}, "one pod, one charge"


def test_a_statefulset_scaled_down_and_up_does_not_run_its_pod_twice_after_a_force_delete(cluster, store):
    """HPA scales db to 1: db-1 terminates for its grace period; HPA scales back to 2; alice
    force-deletes the terminating db-1 so that the controller may make db-1 again at once."""
    sts = cluster.create(statefulset("db", gpus=4, replicas=2), "alice", INTERN).obj
    assert sts_pod(cluster, sts, 0).allowed and sts_pod(cluster, sts, 1).allowed
    scheduled(cluster, "db-0")
    scheduled(cluster, "db-1")
    assert scaled(cluster, "StatefulSet", "db", 1, HPA, SYSTEM).allowed
    assert graceful_delete(cluster, "db-1", STATEFULSET_CONTROLLER, SYSTEM)
    assert scaled(cluster, "StatefulSet", "db", 2, HPA, SYSTEM).allowed
    assert [r for r in audit(store) if r["user"] == HPA and r["decision"] == "allowed"][-1]["owner"] == "alice"
    assert force_delete(cluster, "db-1", "alice", INTERN)
    ghost = 4
    again = sts_pod(cluster, cluster.get("StatefulSet", "db"), 1)
    running = running_gpus(cluster) + ghost
    assert not again.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_a_training_operators_worker_forced_out_is_not_made_again_under_its_name_at_once(cluster, store):
    """The training operator names pods `<job>-worker-<i>` and makes a missing one again."""
    job = make_pytorchjob(workers=1, gpus=4).named("research", "llm").obj()
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        spec["template"]["spec"]["terminationGracePeriodSeconds"] = GRACE
    made = cluster.create(job, "alice", INTERN)
    assert made.allowed, made.message
    specs = made.obj["spec"]["pytorchReplicaSpecs"]
    for role, name in (("Master", "llm-master-0"), ("Worker", "llm-worker-0")):
        pod = cluster.child(made.obj, "v1", "Pod", specs[role]["template"],
                            copy.deepcopy(specs[role]["template"]["spec"]), TRAINING_OPERATOR, name=name)
        assert pod.allowed, pod.message
        scheduled(cluster, name)
    assert force_delete(cluster, "llm-worker-0", "alice", INTERN)
    ghost = 4
    again = cluster.child(made.obj, "v1", "Pod", specs["Worker"]["template"],
                          copy.deepcopy(specs["Worker"]["template"]["spec"]), TRAINING_OPERATOR, name="llm-worker-0")
    running = running_gpus(cluster) + ghost
    assert not again.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_a_bare_pod_created_again_while_the_old_one_terminates_keeps_one_charge(cluster, store):
    pod = make_pod(gpus=8).named("research", "solo").obj()
    pod["spec"]["terminationGracePeriodSeconds"] = GRACE
    assert cluster.create(pod, "alice", INTERN).allowed
    scheduled(cluster, "solo")
    assert graceful_delete(cluster, "solo", "alice", INTERN)
    submit(cluster, pod, "alice", INTERN)  # the API server answers AlreadyExists after admission
    assert held(store) == {"alice": 8}
    assert records(store)["solo"].gpus == 8
    kubelet_final_delete(cluster, "solo")
    assert held(store) == {}, "the pod is gone: nothing of it stays charged"
    again = cluster.create(pod, "alice", INTERN)
    assert again.allowed, again.message
    assert held(store) == {"alice": 8}


# ================================================================== deletes that leave the object, or none


def test_a_controller_pass_inside_the_grace_does_not_forget_a_force_deleted_pod(cluster, store):
    """The controller forgets a Pod record whose pod is not listed after its forget grace
    (30 s); a force-deleted pod's containers run for the pod's own grace period (600 s)."""
    rs, name = running_pod_of(cluster)
    assert force_delete(cluster, name, "alice", INTERN)
    reconcile(cluster, store, now=time.time() + WITHIN_GRACE)
    replacement = pods_of(cluster, rs, 1)[0]
    running = running_gpus(cluster) + 8
    assert not replacement.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_a_force_delete_after_a_graceful_one_keeps_the_record_through_a_controller_pass(cluster, store):
    """`kubectl delete pod` then, impatient, `--force --grace-period=0`: the object goes, the
    containers still run out the grace period the kubelet started with."""
    rs, name = running_pod_of(cluster)
    assert graceful_delete(cluster, name, "alice", INTERN)
    assert force_delete(cluster, name, "alice", INTERN)
    reconcile(cluster, store, now=time.time() + WITHIN_GRACE)
    replacement = pods_of(cluster, rs, 1)[0]
    running = running_gpus(cluster) + 8
    assert not replacement.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_force_deleted_bare_pods_still_count_against_the_users_cap_until_their_grace_ends(cluster, store):
    def pod(name: str) -> dict[str, Any]:
        obj = make_pod(gpus=8).named("research", name).obj()
        obj["spec"]["terminationGracePeriodSeconds"] = GRACE
        return obj

    for name in ("a", "b"):
        assert cluster.create(pod(name), "alice", INTERN).allowed
        scheduled(cluster, name)
    assert force_delete(cluster, "a", "alice", INTERN)
    reconcile(cluster, store, now=time.time() + WITHIN_GRACE)
    answer = cluster.create(pod("c"), "alice", INTERN)
    assert not answer.allowed, f"24 GPUs run on a 16-GPU cap: {held(store)} charged"
    reconcile(cluster, store, now=time.time() + GRACE + 1)
    assert cluster.create(pod("c"), "alice", INTERN).allowed, "the forced pod's GPUs come back after its grace"
    assert held(store) == {"alice": 16}


def test_an_eviction_with_grace_zero_does_not_free_gpus_its_containers_still_hold(cluster, store):
    """`Eviction.deleteOptions.gracePeriodSeconds: 0` (no disruption budget in the way): the
    API server removes the pod at once; the kubelet still gives its containers the pod's grace."""
    rs, name = running_pod_of(cluster)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "research"},
                "deleteOptions": {"gracePeriodSeconds": 0}}
    answer = submit(cluster, eviction, "alice", INTERN, sub_resource="eviction", kind=("policy", "v1", "Eviction"),
                    resource=("", "pods"), name=name)
    assert answer["allowed"], "alice may evict her own pod"
    del cluster.objects[("Pod", "research", name)]
    ghost = 8
    now = pods_of(cluster, rs, 1)[0]
    assert not now.allowed or charged(store) >= running_gpus(cluster) + ghost, held(store)
    reconcile(cluster, store, now=time.time() + WITHIN_GRACE)  # the controller sees the pod gone
    later = pods_of(cluster, rs, 1)[0]
    running = running_gpus(cluster) + ghost
    assert not later.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_removing_the_finalizer_of_a_force_deleted_pod_does_not_free_its_gpus(cluster, store):
    """A force delete of a pod with a finalizer leaves it (deletionGracePeriodSeconds 0): the
    kubelet then kills it with the pod's own grace period. The UPDATE that removes the last
    finalizer removes the object at once, while the containers still run."""
    rs, name = running_pod_of(cluster, finalizers=["alice.example.com/hold"])
    assert delete_with(cluster, "Pod", name, "alice", INTERN, gracePeriodSeconds=0)
    mark_deleting(cluster, "Pod", name, 0)
    released = cluster.get("Pod", name)
    released["metadata"]["finalizers"] = []
    answer = cluster.update(released, "alice", INTERN)
    if answer.allowed:  # grace 0 and no finalizer: the API server removes the object
        del cluster.objects[("Pod", "research", name)]
    ghost = 8 if answer.allowed else 0
    replacement = pods_of(cluster, rs, 1)[0]
    running = running_gpus(cluster) + ghost
    assert not replacement.allowed or charged(store) >= running, f"{running} GPUs run, {held(store)} charged"


def test_a_delete_naming_a_grace_longer_than_the_bound_keeps_the_pod_charged_while_it_is_listed(cluster, store):
    """`kubectl delete pod --grace-period=86400`: the API server takes the DELETE's own grace
    over the pod's; the pod stays listed, terminating, for as long."""
    rs, name = running_pod_of(cluster)
    if delete_with(cluster, "Pod", name, "alice", INTERN, gracePeriodSeconds=86400):
        mark_deleting(cluster, "Pod", name, 86400)
    reconcile(cluster, store, now=time.time() + 3600)  # past any bound, the pod still listed
    assert held(store) == {"alice": 8}
    assert not pods_of(cluster, rs, 1)[0].allowed, "the terminating pod still holds the root's 8 GPUs"


def test_a_daemonset_pod_force_deleted_and_made_again_is_charged_beside_it(cluster, store):
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "probe", "namespace": "research"},
          "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": gpu_template(8, {"app": "probe"})}}
    made = cluster.create(ds, "alice", INTERN)
    assert made.allowed, made.message
    first = cluster.pod_of(made.obj, made.obj["spec"]["template"], DAEMONSET_CONTROLLER)
    assert first.allowed, first.message
    scheduled(cluster, first.obj["metadata"]["name"])
    assert force_delete(cluster, first.obj["metadata"]["name"], "alice", INTERN)
    ghost = 8
    for _ in range(2):  # the DaemonSet controller makes the node's pod again, and again
        again = cluster.pod_of(made.obj, made.obj["spec"]["template"], DAEMONSET_CONTROLLER)
        if not again.allowed:
            break
        scheduled(cluster, again.obj["metadata"]["name"])
        assert force_delete(cluster, again.obj["metadata"]["name"], "alice", INTERN)
        ghost += 8
    running = running_gpus(cluster) + ghost
    assert charged(store) >= running, f"{running} GPUs run, {held(store)} charged"
    assert charged(store) <= 16


# ================================================================== scale down, then up; rollouts


def test_an_hpa_scaling_down_and_up_does_not_run_a_terminating_pod_beside_its_replacement(cluster, store):
    dep = long_grace(deployment("serve", gpus=4, replicas=2))
    made = cluster.create(dep, "alice", INTERN)
    assert made.allowed, made.message
    rs = cluster.replicaset_of(made.obj, replicas=2).obj
    pods = [a.obj["metadata"]["name"] for a in pods_of(cluster, rs, 2)]
    for name in pods:
        scheduled(cluster, name)
    assert scaled(cluster, "Deployment", "serve", 1, HPA, SYSTEM).allowed
    down = cluster.get("ReplicaSet", rs["metadata"]["name"])
    down["spec"]["replicas"] = 1
    assert cluster.update(down, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    assert graceful_delete(cluster, pods[1], REPLICASET_CONTROLLER, SYSTEM)
    assert scaled(cluster, "Deployment", "serve", 2, HPA, SYSTEM).allowed
    up = cluster.get("ReplicaSet", rs["metadata"]["name"])
    up["spec"]["replicas"] = 2
    assert cluster.update(up, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    replacement = pods_of(cluster, cluster.get("ReplicaSet", rs["metadata"]["name"]), 1)[0]
    assert not replacement.allowed or charged(store) >= running_gpus(cluster), (
        f"{running_gpus(cluster)} GPUs run, {held(store)} charged")
    scales = [r for r in audit(store) if r["user"] == HPA]
    assert scales and all(r["owner"] == "alice" for r in scales), "each scale names the HPA and alice"
    # the terminating pod is gone: the replacement fits, on the root's 8 GPUs
    kubelet_final_delete(cluster, pods[1])
    assert pods_of(cluster, cluster.get("ReplicaSet", rs["metadata"]["name"]), 1)[0].allowed
    assert held(store) == {"alice": 8}


def test_a_rollout_does_not_run_the_old_pod_beside_the_new_one_on_one_charge(cluster, store):
    """maxSurge 0, maxUnavailable 1: the old ReplicaSet goes to 0 (its pod terminates for its
    grace period) and the new one to 1 at once."""
    rs, old_pod = running_pod_of(cluster)
    changed = cluster.get("Deployment", "serve")
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/lab/serve:2"
    rolled = cluster.update(changed, "alice", INTERN)
    assert rolled.allowed, rolled.message
    new_rs = cluster.replicaset_of(rolled.obj, replicas=0)
    assert new_rs.allowed, new_rs.message
    old = cluster.get("ReplicaSet", rs["metadata"]["name"])
    old["spec"]["replicas"] = 0
    assert cluster.update(old, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    assert graceful_delete(cluster, old_pod, REPLICASET_CONTROLLER, SYSTEM)
    grown = cluster.get("ReplicaSet", new_rs.obj["metadata"]["name"])
    grown["spec"]["replicas"] = 1
    assert cluster.update(grown, DEPLOYMENT_CONTROLLER, SYSTEM).allowed
    new_pod = pods_of(cluster, cluster.get("ReplicaSet", grown["metadata"]["name"]), 1)[0]
    assert not new_pod.allowed or charged(store) >= running_gpus(cluster), (
        f"{running_gpus(cluster)} GPUs run, {held(store)} charged")
    kubelet_final_delete(cluster, old_pod)
    later = pods_of(cluster, cluster.get("ReplicaSet", grown["metadata"]["name"]), 1)[0]
    assert later.allowed, f"the rollout stays stuck once the old pod is gone: {later.message}"
    assert held(store) == {"alice": 8}


def test_the_job_controller_does_not_replace_a_terminating_pod_beside_it(cluster, store):
    """The Job controller (podReplacementPolicy TerminatingOrFailed, the default) makes a
    replacement as soon as a pod is terminating."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "research"},
           "spec": {"parallelism": 1, "backoffLimit": 6, "template": {"spec": {
               "restartPolicy": "Never", "terminationGracePeriodSeconds": GRACE, "containers": [container(8)]}}}}
    made = cluster.create(job, "alice", INTERN).obj
    [first] = pods_of(cluster, made, 1, JOB_CONTROLLER)
    scheduled(cluster, first.obj["metadata"]["name"])
    assert graceful_delete(cluster, first.obj["metadata"]["name"], "alice", INTERN)
    replacement = pods_of(cluster, made, 1, JOB_CONTROLLER)[0]
    assert not replacement.allowed or charged(store) >= running_gpus(cluster), (
        f"{running_gpus(cluster)} GPUs run, {held(store)} charged")


# ================================================================== roots gone, controllers left


def test_a_job_left_by_a_deleted_cronjob_makes_no_uncharged_gpu_pods(cluster, store):
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [container(8)]}}}}}}
    made = cluster.create(cron, "alice", INTERN).obj
    job = cluster.job_of(made)
    assert job.allowed, job.message
    assert delete(cluster, "CronJob", "nightly", "alice", INTERN).allowed  # background: the GC comes later
    pod = cluster.pod_of(job.obj, job.obj["spec"]["template"], JOB_CONTROLLER)
    assert not pod.allowed or charged(store) >= running_gpus(cluster), (
        f"{running_gpus(cluster)} GPUs run, {held(store)} charged")
    if pod.allowed:
        assert records(store)[pod.obj["metadata"]["name"]].owner == "alice"


def test_a_replicaset_made_after_its_deployment_was_deleted_runs_no_uncharged_pods(cluster, store):
    """The deployment controller acts on its cache: its ReplicaSet of a Deployment deleted a
    moment before arrives with the deleted UID, and the ReplicaSet controller makes its pods
    before the garbage collector removes it."""
    dep = cluster.create(deployment("serve"), "alice", INTERN).obj
    assert delete(cluster, "Deployment", "serve", "alice", INTERN).allowed
    stale = cluster.replicaset_of(dep, replicas=1)
    if stale.allowed:
        pods_of(cluster, stale.obj, 1)
    assert charged(store) >= running_gpus(cluster), f"{running_gpus(cluster)} GPUs run, {held(store)} charged"


def test_a_root_deleted_in_the_foreground_keeps_its_pods_charged_then_gives_the_quota_back(cluster, store):
    rs, name = running_pod_of(cluster)
    assert delete_with(cluster, "Deployment", "serve", "alice", INTERN, propagationPolicy="Foreground")
    mark_deleting(cluster, "Deployment", "serve", 0, finalizers=["foregroundDeletion"])
    # the garbage collector deletes the dependents first: the ReplicaSet (foreground too), the pod
    assert delete_with(cluster, "ReplicaSet", rs["metadata"]["name"], GC, SYSTEM, propagationPolicy="Foreground")
    mark_deleting(cluster, "ReplicaSet", rs["metadata"]["name"], 0, finalizers=["foregroundDeletion"])
    assert graceful_delete(cluster, name, GC, SYSTEM)
    assert held(store) == {"alice": 8}, "the pod still runs out its grace period"
    assert cluster.create(deployment("b"), "alice", INTERN).allowed
    assert not cluster.create(deployment("c"), "alice", INTERN).allowed, "24 GPUs on a 16-GPU cap"
    kubelet_final_delete(cluster, name)
    for kind, obj in (("ReplicaSet", rs["metadata"]["name"]), ("Deployment", "serve")):
        gone = cluster.get(kind, obj)
        gone["metadata"]["finalizers"] = []
        assert cluster.update(gone, GC, SYSTEM).allowed  # the last finalizer: the object goes
        del cluster.objects[(kind, "research", obj)]
    assert held(store) == {"alice": 8}, "only deployment b still runs"
    assert cluster.create(deployment("c"), "alice", INTERN).allowed, "the quota is back"


# ================================================================== the quota comes back


def test_a_finished_job_removed_by_its_ttl_gives_the_quota_back(cluster, store):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "research"},
           "spec": {"parallelism": 2, "ttlSecondsAfterFinished": 0, "template": {"spec": {
               "restartPolicy": "Never", "containers": [container(4)]}}}}
    made = cluster.create(job, "alice", INTERN)
    assert made.allowed, made.message
    names = [a.obj["metadata"]["name"] for a in pods_of(cluster, made.obj, 2, JOB_CONTROLLER)]
    for name in names:
        scheduled(cluster, name)
        cluster.objects[("Pod", "research", name)]["status"] = {"phase": "Succeeded"}
    assert delete(cluster, "Job", "train", TTL_CONTROLLER, SYSTEM).allowed
    for name in names:  # finished pods: the API server removes them at once
        assert delete(cluster, "Pod", name, GC, SYSTEM).allowed
    reconcile(cluster, store)
    assert held(store) == {}, "nothing runs"
    assert cluster.create(deployment("a"), "alice", INTERN).allowed
    assert cluster.create(deployment("b"), "alice", INTERN).allowed, "the full 16 GPUs are alice's again"


def test_a_pod_the_pod_gc_forces_out_on_a_lost_node_is_freed_once_its_grace_is_over(cluster, store):
    """alice deletes her pod; its node is lost, so no kubelet ever sends the final DELETE; the
    pod garbage collector force-deletes it."""
    rs, name = running_pod_of(cluster)
    assert graceful_delete(cluster, name, "alice", INTERN)
    assert delete_with(cluster, "Pod", name, POD_GC, SYSTEM, gracePeriodSeconds=0)
    del cluster.objects[("Pod", "research", name)]
    reconcile(cluster, store, now=time.time() + GRACE + 1)
    replacement = pods_of(cluster, rs, 1)[0]
    assert replacement.allowed, f"the charge of a pod long gone is stuck: {replacement.message}"
    assert held(store) == {"alice": 8}


def test_a_deployment_scaled_to_zero_and_deleted_gives_everything_back_once_its_pods_are_gone(cluster, store):
    dep = long_grace(deployment("serve", gpus=4, replicas=2))
    made = cluster.create(dep, "alice", INTERN).obj
    rs = cluster.replicaset_of(made, replicas=2).obj
    names = [a.obj["metadata"]["name"] for a in pods_of(cluster, rs, 2)]
    for name in names:
        scheduled(cluster, name)
    assert scaled(cluster, "Deployment", "serve", 0, "alice", INTERN).allowed
    assert graceful_delete(cluster, names[0], REPLICASET_CONTROLLER, SYSTEM)
    assert delete(cluster, "Deployment", "serve", "alice", INTERN).allowed
    assert delete(cluster, "ReplicaSet", rs["metadata"]["name"], GC, SYSTEM).allowed
    assert graceful_delete(cluster, names[1], GC, SYSTEM)
    assert held(store) == {"alice": 8}
    for name in names:
        kubelet_final_delete(cluster, name)
    assert held(store) == {}
    reconcile(cluster, store, now=time.time() + GRACE + 1)
    assert held(store) == {}
    assert store.reservations() == [] or all(r.gpus == 0 for r in store.reservations())
