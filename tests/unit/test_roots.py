"""Which listed objects the controller records as unowned roots (gateway/scheduling/roots.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import make_deployment, make_job, make_pytorchjob
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.policy import Policy
from gateway.admission.shape import parse, scaled
from gateway.scheduling.reconcile import Repair
from gateway.scheduling.roots import RootKind, read_root, root_kinds, unknown_roots

DEPLOYMENTS = RootKind("apps", "Deployment", "deployments")
REPLICASETS = RootKind("apps", "ReplicaSet", "replicasets")
JOBS = RootKind("batch", "Job", "jobs")
CRONJOBS = RootKind("batch", "CronJob", "cronjobs")
PYTORCHJOBS = RootKind("kubeflow.org", "PyTorchJob", "pytorchjobs")


def owned(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                                           "uid": "uid-d", "controller": True}]
    return obj


def suspended(obj: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["runPolicy"] = {"suspend": True}
    return obj


def cronjob(gpus: int) -> dict[str, Any]:
    job = make_job(gpus=gpus).obj()
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job["spec"]}}}


@pytest.mark.parametrize("kind, obj, expected", [
    (DEPLOYMENTS, make_deployment(gpus=8, replicas=0).named("research", "parked").obj(), (0, True)),
    (DEPLOYMENTS, make_deployment(gpus=8, replicas=2).named("research", "serve").obj(), (24, True)),
    (DEPLOYMENTS, make_deployment(gpus=0, replicas=5).named("research", "web").obj(), None),
    (JOBS, make_job(gpus=4).named("research", "train").obj(), (4, True)),
    (CRONJOBS, cronjob(4), (4, False)),  # each Job it makes is charged when made
    (PYTORCHJOBS, suspended(make_pytorchjob(workers=2, gpus=8).named("research", "llm").obj()), (0, True)),
    (DEPLOYMENTS, make_deployment(gpus=8).named("kube-system", "dns").obj(), None),  # an exempt namespace
    (DEPLOYMENTS, {"metadata": {"name": "broken", "namespace": "research"}, "spec": {"replicas": -1}}, None),
])
def test_which_listed_objects_are_gpu_roots(policy: Policy, kind: RootKind, obj: dict[str, Any],
                                            expected: tuple[int, bool] | None) -> None:
    obj["metadata"].setdefault("uid", "uid-1")
    root = read_root(obj, kind, policy)
    if expected is None:
        assert root is None
        return
    assert root is not None
    assert (root.gpus, root.charged, root.kind, root.owner, root.uid) == (*expected, "root", "", "uid-1")
    assert root.key == f"{kind.resource_key}/{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def test_a_recorded_root_scales_as_an_admitted_one(policy: Policy) -> None:
    """Its shape is the admission's: pod sets by path, and how `/scale` moves them."""
    root = read_root(make_deployment(gpus=8, replicas=0).named("research", "parked").obj(), DEPLOYMENTS, policy)
    assert root is not None
    assert parse(root.shape)["sets"] == [["/spec/template", 0, 8]]
    after = scaled(root.shape, 100, root.gpus, 0)
    assert after is not None and after[0] == (100 + 25) * 8  # with a rolling update's default 25% surge


def test_root_kinds_are_every_workload_kind_but_pods_with_the_registered_ones(policy: Policy) -> None:
    kinds = {k.resource_key for k in root_kinds(policy.kinds)}
    assert {"deployments.apps", "replicasets.apps", "jobs.batch", "cronjobs.batch", "replicationcontrollers",
            "pytorchjobs.kubeflow.org", "leaderworkersets.leaderworkerset.x-k8s.io"} <= kinds
    assert "pods" not in kinds
    assert {spec.resource + "." + spec.group for spec in policy.kinds} <= kinds


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8),
       st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_unknown_roots_are_those_the_ledger_does_not_hold_each_once(names: list[str], held: set[str]) -> None:
    roots = [Repair(f"deployments.apps/research/{n}", "root", "r", uid=f"{n}-{i}") for i, n in enumerate(names)]
    held_keys = {f"deployments.apps/research/{n}" for n in held}
    new = unknown_roots(roots, held_keys)
    assert [r.key for r in new] == list(dict.fromkeys(r.key for r in roots if r.key not in held_keys))
    assert all(r.uid == next(x.uid for x in roots if x.key == r.key) for r in new), "the first listed wins"


def test_what_a_listed_workload_controls_is_held_to_its_root_and_an_odd_owner_makes_a_root(policy: Policy) -> None:
    """A legacy Deployment's ReplicaSet is recorded under the Deployment (charged nothing itself);
    one whose controller is no listed or recorded workload (a ConfigMap, a kind without a CRD, an
    object that does not exist) is a root of its own; a CronJob's Job is charged on its own."""
    dep = make_deployment(gpus=8, replicas=2).named("research", "serve").obj()
    dep["metadata"]["uid"] = "uid-dep"
    rs = owned(make_deployment(gpus=8, replicas=2).named("research", "serve-5d8f").obj() | {"kind": "ReplicaSet"})
    rs["metadata"]["uid"] = "uid-rs"
    stray = make_deployment(gpus=8, replicas=1).named("research", "stray").obj() | {"kind": "ReplicaSet"}
    stray["metadata"]["uid"] = "uid-stray"
    stray["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm",
                                             "uid": "uid-cm", "controller": True}]
    listed = [r for r in (read_root(dep, DEPLOYMENTS, policy), read_root(rs, REPLICASETS, policy),
                          read_root(stray, REPLICASETS, policy)) if r is not None]
    assert [r.parent_uid for r in listed] == ["", rs["metadata"]["ownerReferences"][0]["uid"], "uid-cm"]
    rs["metadata"]["ownerReferences"][0]["uid"] = "uid-dep"
    listed[1] = read_root(rs, REPLICASETS, policy)
    new = {r.key.rsplit("/", 1)[1]: (r.charged, r.root_uid) for r in unknown_roots(listed, set())}
    assert new == {"serve": (True, ""), "serve-5d8f": (False, "uid-dep"), "stray": (True, "")}
    # the Deployment recorded earlier (by admission): the ReplicaSet goes under its record's root
    alone = unknown_roots(listed[1:2], {"deployments.apps/research/serve"}, {"uid-dep": ("uid-dep", "bob", "vision")})
    assert [(r.charged, r.root_uid, r.owner, r.team) for r in alone] == [(False, "uid-dep", "bob", "vision")]
