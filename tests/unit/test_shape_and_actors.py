"""The ledger's shape arithmetic (a /scale decided from the record alone) and the actors model."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from builders_workloads import obj, template
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.actors import Actors, ActorSpec, OwnerRef, controller_ref, name_error, parse_actors
from gateway.admission.shape import (
    admitted_classes,
    asked,
    charges_children,
    gang_pods,
    held_charge,
    max_gpus_per_pod,
    scaled,
    shape_of,
)
from gateway.admission.workloads import GpuMatcher, read_workload, scale_rule

MATCH = GpuMatcher()

surges = st.one_of(st.none(), st.integers(0, 5), st.sampled_from(["0%", "10%", "25%", "50%", "100%", "3"]))


def _with_replicas(kind: str, o: dict[str, Any], replicas: int) -> dict[str, Any]:
    o = copy.deepcopy(o)
    if kind == "PyTorchJob":
        o["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = replicas
    else:
        o["spec"]["replicas"] = replicas
    return o


@st.composite
def scalable(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    kind = draw(st.sampled_from(["Deployment", "StatefulSet", "ReplicaSet", "LeaderWorkerSet", "PyTorchJob"]))
    replicas = draw(st.integers(0, 50))
    gpus_a, gpus_b = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    if kind == "Deployment":
        surge = draw(surges)
        spec: dict[str, Any] = {"replicas": replicas, "template": template(gpus_a)}
        if surge is not None:
            spec["strategy"] = {"rollingUpdate": {"maxSurge": surge}}
        return "apps", kind, obj("apps/v1", kind, spec)
    if kind in ("StatefulSet", "ReplicaSet"):
        return "apps", kind, obj("apps/v1", kind, {"replicas": replicas, "template": template(gpus_a)})
    if kind == "LeaderWorkerSet":
        lwt: dict[str, Any] = {"size": draw(st.integers(1, 8)), "workerTemplate": template(gpus_b)}
        if draw(st.booleans()):
            lwt["leaderTemplate"] = template(gpus_a)
        spec = {"replicas": replicas, "leaderWorkerTemplate": lwt}
        surge = draw(surges)
        if surge is not None:
            spec["rolloutStrategy"] = {"rollingUpdateConfiguration": {"maxSurge": surge}}
        return "leaderworkerset.x-k8s.io", kind, obj("leaderworkerset.x-k8s.io/v1", kind, spec)
    spec = {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": template(gpus_a)},
                                    "Worker": {"replicas": replicas, "template": template(gpus_b)}}}
    elastic = draw(st.one_of(st.none(), st.integers(1, 60)))
    if elastic is not None:
        spec["elasticPolicy"] = {"maxReplicas": elastic}
    return "kubeflow.org", kind, obj("kubeflow.org/v1", kind, spec)


@settings(max_examples=300, deadline=None)
@given(scalable(), st.integers(0, 80))
def test_a_scale_decided_from_the_record_equals_reading_the_object_at_that_size(case, new_replicas):
    group, kind, o = case
    workload = read_workload(o, group, kind, MATCH)
    shape = shape_of(workload, scale_rule(o, group, kind, workload))
    result = scaled(shape, new_replicas, workload.gpus, None)
    assert result is not None
    gpus, new_shape = result
    at_new_size = read_workload(_with_replicas(kind, o, new_replicas), group, kind, MATCH)
    assert gpus == at_new_size.gpus
    assert gang_pods(new_shape) == sum(ps.count for ps in at_new_size.pod_sets if ps.gpus_each)
    assert max_gpus_per_pod(new_shape) == max_gpus_per_pod(shape)


def test_a_shape_from_before_pod_sets_were_kept_by_path_scales_by_its_unit():
    assert scaled('{"unit":8,"sets":[["main",2,8]]}', 5, 16, 2) == (40, '{"unit":8,"sets":[["main",2,8]]}')
    assert scaled('{"unit":null,"sets":[["a",1,8],["b",2,8]]}', 5, 24, 3) is None


@pytest.mark.parametrize("garbage", ["", "[]", "not json", '{"sets":"x"}', '{"scale":{"moves":[[9,1]]},"sets":[]}'])
def test_a_damaged_shape_never_crashes(garbage):
    assert max_gpus_per_pod(garbage) == 0
    assert gang_pods(garbage) == 0
    assert not charges_children(garbage)
    assert admitted_classes(garbage) is None
    scaled(garbage, 3, 0, None)


def test_the_priority_classes_a_workload_was_admitted_with_survive_a_scale():
    o = obj("apps/v1", "Deployment", {"replicas": 1, "template": template(8)})
    workload = read_workload(o, "apps", "Deployment", MATCH)
    shape = shape_of(workload, scale_rule(o, "apps", "Deployment", workload), priority_classes={"high", ""})
    assert admitted_classes(shape) == {"", "high"}
    result = scaled(shape, 3, 8, 1)
    assert result is not None and admitted_classes(result[1]) == {"", "high"}
    assert admitted_classes(shape_of(workload)) is None  # none recorded: only the role's classes pass
    assert admitted_classes('{"sets":[],"priority_classes":["high",7]}') is None


def test_a_cronjob_charges_its_children():
    o = obj("batch/v1", "CronJob", {"jobTemplate": {"spec": {"template": template(8)}}})
    workload = read_workload(o, "batch", "CronJob", MATCH)
    assert charges_children(shape_of(workload, None, charge_children=True))


def test_actors_are_exact_names_except_for_nodes():
    actors = Actors(parse_actors({"system:serviceaccount:kube-system:job-controller": {"creates": ["Pod"]},
                                  "system:node:*": {"creates": ["Pod"]}}))
    assert actors.find("system:serviceaccount:kube-system:job-controller") is not None
    assert actors.find("system:serviceaccount:kube-system:job-controller2") is None
    assert actors.find("system:node:gpu-7") is not None
    assert actors.find("system:node:") is None
    assert actors.find("system:serviceaccount:kube-system:default") is None


@pytest.mark.parametrize("name", ["system:serviceaccount:kube-system:*", "system:serviceaccount:*:kuberay-operator",
                                  "user-?", " padded"])
def test_actor_patterns_are_refused(name):
    assert name_error(name)
    with pytest.raises(ValueError):
        parse_actors({name: {}})


@pytest.mark.parametrize("body", [{"creates": "Pod"}, {"creates": ["*"]}, {"scales": True}, ["Pod"]])
def test_malformed_actor_entries_are_refused(body):
    with pytest.raises(ValueError):
        parse_actors({"system:serviceaccount:x:y": body})


def test_only_the_controller_owner_reference_counts():
    pod = {"metadata": {"ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1"},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": True}]}}
    assert controller_ref(pod) == OwnerRef("apps/v1", "ReplicaSet", "b", "2")
    assert controller_ref({"metadata": {"ownerReferences": [{"controller": True, "uid": 3}]}}) is None
    assert controller_ref({"metadata": {"ownerReferences": "x"}}) is None
    assert OwnerRef("apps/v1", "ReplicaSet", "b", "2").resource_key == "replicasets.apps"
    assert OwnerRef("ray.io/v1", "RayCluster", "b", "2").resource_key == "rayclusters.ray.io"
    assert OwnerRef("v1", "Node", "n", "2").resource_key == "nodes"


def test_an_actor_creates_only_its_kinds():
    spec = ActorSpec("x", frozenset({"Pod", "apps/ReplicaSet"}))
    assert spec.may_create("", "Pod") and spec.may_create("apps", "ReplicaSet")
    assert not spec.may_create("batch", "Job") and not spec.may_create("example.com", "Pod")


@settings(max_examples=300, deadline=None)
@given(asks=st.integers(0, 10_000), held=st.integers(0, 10_000), later=st.integers(0, 10_000))
def test_a_roots_charge_never_drops_below_what_its_pods_hold(asks, held, later):
    """held_charge: charge = max(asked, held); the shape keeps what it asks for while held above
    it, and settling again as pods go ends where the root asks, with the shape as it was."""
    base = shape_of(read_workload(obj("apps/v1", "Deployment", {"replicas": 2, "template": template(8)}),
                                  "apps", "Deployment", MATCH))
    charge, shape = held_charge(base, asks, held)
    assert charge == max(asks, held)
    assert asked(shape) == (asks if held > asks else None)
    settled, again = held_charge(shape, asked(shape) if asked(shape) is not None else asks, min(later, held))
    assert settled == max(asks, min(later, held))
    if settled == asks:
        assert again == base or (asked(again) is None and json.loads(again) == json.loads(base))
