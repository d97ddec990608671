"""Fields of a person's object that make a controller act on someone else's objects (issue:
sabotage defence), through `/mutate` then `/validate` as a cluster would (tests/cluster_sim.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cluster_sim import REPLICASET_CONTROLLER, SYSTEM, Cluster
from conftest import ADMIN, INTERN, RESEARCHER, container, make_deployment, make_pod

from gateway.service import AdmissionService

NLP = ("gpu-researchers", "team:nlp")


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def deployment(name: str) -> dict[str, Any]:
    dep = make_deployment(gpus=8, replicas=1).named("research", name).obj()
    dep["spec"]["strategy"] = {"type": "Recreate"}
    return dep


@pytest.mark.parametrize("label", ["pod-template-hash", "batch.kubernetes.io/controller-uid", "job-name",
                                   "training.kubeflow.org/job-name", "ray.io/cluster",
                                   "jobset.sigs.k8s.io/jobset-name", "leaderworkerset.sigs.k8s.io/name"])
def test_a_person_may_not_set_the_labels_controllers_select_their_pods_by(cluster, label):
    pod = make_pod(gpus=0).named("research", "cpu").obj()
    pod["metadata"]["labels"] = {label: "serve-7d9f"}
    answer = cluster.create(pod, "alice", INTERN)
    assert not answer.allowed and f"sets {label} (metadata)" in answer.message
    # nor in a workload's pod template, with or without GPUs
    dep = deployment("d")
    dep["spec"]["template"]["metadata"]["labels"][label] = "x"
    answer = cluster.create(dep, "alice", INTERN)
    assert not answer.allowed and f"{label} (spec.template)" in answer.message


def test_an_admin_may_set_controller_labels(cluster):
    pod = make_pod(gpus=0).named("research", "cpu").obj()
    pod["metadata"]["labels"] = {"pod-template-hash": "abc"}
    assert cluster.create(pod, "root", ADMIN).allowed


def test_an_ownerreference_to_another_persons_workload_is_a_modify_of_it(cluster):
    bobs = cluster.create(deployment("serve"), "bob", NLP).obj
    pod = make_pod(gpus=0).named("research", "cuckoo").obj()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "serve",
                                           "uid": bobs["metadata"]["uid"]}]
    answer = cluster.create(pod, "alice", INTERN)
    assert not answer.allowed and "names Deployment research/serve as its owner, which belongs to bob" in answer.message
    # to one's own workload it is fine
    assert cluster.create(copy.deepcopy(pod) | {"metadata": {**pod["metadata"], "name": "mine"}}, "bob", NLP).allowed


def test_a_rayjob_running_in_another_persons_raycluster_is_an_exec(cluster):
    ray = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "bobs-ray", "namespace": "research"},
           "spec": {"headGroupSpec": {"template": {"spec": {"containers": [container(0)]}}},
                    "workerGroupSpecs": [{"groupName": "w", "replicas": 1,
                                          "template": {"spec": {"containers": [container(8)]}}}]}}
    assert cluster.create(ray, "bob", NLP).allowed
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "probe", "namespace": "research"},
           "spec": {"entrypoint": "python -c 'import os'", "clusterSelector": {"ray.io/cluster": "bobs-ray"}}}
    answer = cluster.create(job, "alice", INTERN)
    assert not answer.allowed and "runs its entrypoint inside RayCluster research/bobs-ray" in answer.message
    assert "may not exec it" in answer.message
    assert cluster.create(job | {"metadata": {"name": "bobs-own", "namespace": "research"}}, "bob", NLP).allowed


def test_a_pod_named_as_another_persons_statefulset_pod_is_refused(cluster):
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "research"},
           "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container(1)]}}}}
    assert cluster.create(sts, "bob", NLP).allowed
    squat = make_pod(gpus=0).named("research", "db-1").obj()
    squat["metadata"]["labels"] = {"app": "db"}
    answer = cluster.create(squat, "alice", INTERN)
    assert not answer.allowed and "StatefulSet research/db gives its pod 1" in answer.message


def test_relabelling_or_orphaning_a_controllers_pod_is_refused_even_to_its_owner(cluster):
    dep = cluster.create(deployment("serve"), "bob", RESEARCHER).obj
    rs = cluster.replicaset_of(dep, replicas=1).obj
    pod = cluster.pod_of(rs, rs["spec"]["template"], REPLICASET_CONTROLLER).obj
    relabelled = copy.deepcopy(pod)
    relabelled["metadata"]["labels"] = {"quarantined": "yes"}
    answer = cluster.update(relabelled, "bob", RESEARCHER)
    assert not answer.allowed and "changes its labels" in answer.message
    orphaned = copy.deepcopy(pod)
    orphaned["metadata"]["ownerReferences"] = []
    answer = cluster.update(orphaned, "bob", RESEARCHER)
    assert not answer.allowed and "controller ownerReference" in answer.message
    # the ReplicaSet controller itself may release or relabel its pods
    assert cluster.update(orphaned, REPLICASET_CONTROLLER, SYSTEM).allowed


def test_a_controller_may_not_adopt_another_persons_pod(cluster):
    mine = cluster.create(deployment("web"), "alice", INTERN).obj
    rs = cluster.replicaset_of(mine, replicas=1).obj
    bobs = cluster.create(make_pod(gpus=8).named("research", "bobs").obj(), "bob", RESEARCHER).obj
    adopted = copy.deepcopy(bobs)
    adopted["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                               "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"]}]
    answer = cluster.update(adopted, REPLICASET_CONTROLLER, SYSTEM)
    assert not answer.allowed and "would adopt Pod research/bobs, which belongs to bob" in answer.message


@pytest.mark.parametrize(("api_version", "kind"), [("autoscaling/v2", "HorizontalPodAutoscaler"),
                                                   ("keda.sh/v1alpha1", "ScaledObject")])
def test_an_autoscaler_a_person_creates_may_scale_only_what_they_may_modify(cluster, store, api_version, kind):
    cluster.create(deployment("serve"), "bob", NLP)
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serve"}}
    if kind == "HorizontalPodAutoscaler":
        spec.update(minReplicas=1, maxReplicas=30)
    hpa = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "grow", "namespace": "research"},
           "spec": spec}
    answer = cluster.create(hpa, "alice", INTERN)
    assert not answer.allowed and "scales Deployment research/serve (spec.scaleTargetRef)" in answer.message
    assert cluster.create(hpa | {"metadata": {"name": "bobs", "namespace": "research"}}, "bob", NLP).allowed
