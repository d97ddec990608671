"""Shared fixtures and builders: tests read as the case they check.

    make_job(gpus=8, parallelism=4).named("research", "llm").obj()
    review(job, user="alice", groups=["gpu-interns"]).body()
"""

from __future__ import annotations

import copy
import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.admission.admission import prepare
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review
from gateway.audit.history import keyed_digest
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, load_bundle
from gateway.service import AdmissionService, admission_job
from gateway.store.sqlite import SQLiteStore
from gateway.store.types import Job

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

_uids = itertools.count(1)

INTERN = ("gpu-interns", "team:vision")
RESEARCHER = ("gpu-researchers", "team:vision")
LEAD = ("gpu-leads", "team:vision")
ADMIN = ("gpu-admins",)

_RESOURCES = {
    ("", "Pod"): "pods", ("batch", "Job"): "jobs", ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets", ("apps", "ReplicaSet"): "replicasets",
    ("kubeflow.org", "PyTorchJob"): "pytorchjobs", ("kubeflow.org", "MPIJob"): "mpijobs",
    ("jobset.x-k8s.io", "JobSet"): "jobsets", ("ray.io", "RayJob"): "rayjobs",
    ("ray.io", "RayCluster"): "rayclusters", ("batch.volcano.sh", "Job"): "jobs",
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkersets",
    ("trainer.kubeflow.org", "TrainJob"): "trainjobs",
}


def container(gpus: int | str | None = 0, resource: str = "nvidia.com/gpu", name: str = "main") -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "ghcr.io/lab/train:1"}
    if gpus:
        c["resources"] = {"limits": {resource: gpus}}
    return c


@dataclass
class Obj:
    data: dict[str, Any]

    def named(self, namespace: str, name: str) -> Obj:
        self.data.setdefault("metadata", {}).update(namespace=namespace, name=name)
        return self

    def annotated(self, **annotations: str) -> Obj:
        ann = self.data.setdefault("metadata", {}).setdefault("annotations", {})
        ann.update({k.replace("_", "-").replace("gpu-gateway-io-", "gpu-gateway.io/"): v
                    for k, v in annotations.items()})
        return self

    def owned_by(self, owner: str, team: str = "") -> Obj:
        ann = self.data.setdefault("metadata", {}).setdefault("annotations", {})
        ann["gpu-gateway.io/owner"] = owner
        if team:
            ann["gpu-gateway.io/team"] = team
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)


def make_pod(gpus: int | str = 8, resource: str = "nvidia.com/gpu") -> Obj:
    return Obj({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "research"},
                "spec": {"containers": [container(gpus, resource)]}})


def make_job(gpus: int | str = 8, parallelism: int | None = 1) -> Obj:
    spec: dict[str, Any] = {"template": {"spec": {"restartPolicy": "Never", "containers": [container(gpus)]}}}
    if parallelism is not None:
        spec["parallelism"] = parallelism
    return Obj({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "train", "namespace": "research"}, "spec": spec})


def make_deployment(gpus: int = 8, replicas: int | None = 1) -> Obj:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "x"}},
                            "template": {"metadata": {"labels": {"app": "x"}},
                                         "spec": {"containers": [container(gpus)]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return Obj({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "serve", "namespace": "research"}, "spec": spec})


def make_pytorchjob(workers: int = 999, gpus: int = 8) -> Obj:
    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [container(gpus, name="pytorch")]}}}

    return Obj({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                "metadata": {"name": "llm-70b", "namespace": "research"},
                "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}}})


@dataclass
class Review:
    obj: dict[str, Any] | None
    user: str = "alice"
    groups: tuple[str, ...] = INTERN
    operation: str = "CREATE"
    sub_resource: str = ""
    old: dict[str, Any] | None = None
    dry_run: bool = False
    namespace: str | None = None
    name: str | None = None
    kind: tuple[str, str, str] | None = None
    resource: tuple[str, str] | None = None
    uid: str = field(default_factory=lambda: f"uid-{next(_uids)}")

    def body(self) -> dict[str, Any]:
        src = self.obj or self.old or {}
        api = str(src.get("apiVersion", "v1"))
        group, _, version = api.rpartition("/")
        kind = self.kind or (group, version, str(src.get("kind", "Pod")))
        resource = self.resource or (kind[0], _RESOURCES.get((kind[0], kind[2]), kind[2].lower() + "s"))
        meta = src.get("metadata", {})
        req: dict[str, Any] = {
            "uid": self.uid,
            "kind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
            "resource": {"group": resource[0], "version": kind[1], "resource": resource[1]},
            "requestKind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
            "namespace": self.namespace if self.namespace is not None else meta.get("namespace", "research"),
            "name": self.name if self.name is not None else meta.get("name", ""),
            "operation": self.operation,
            "userInfo": {"username": self.user, "groups": [*self.groups, "system:authenticated"]},
            "dryRun": self.dry_run,
        }
        if self.sub_resource:
            req["subResource"] = self.sub_resource
        if self.obj is not None:
            req["object"] = self.obj
        if self.old is not None:
            req["oldObject"] = self.old
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def review(obj: dict[str, Any] | None, **kw: Any) -> Review:
    return Review(obj, **kw)


def exec_review(namespace: str, pod: str, *, user: str, groups: tuple[str, ...], sub: str = "exec") -> Review:
    kinds = {"exec": "PodExecOptions", "attach": "PodAttachOptions", "portforward": "PodPortForwardOptions"}
    return Review({"apiVersion": "v1", "kind": kinds[sub], "command": ["sh"]}, user=user, groups=groups,
                  operation="CONNECT", sub_resource=sub, namespace=namespace, name=pod,
                  kind=("", "v1", kinds[sub]), resource=("", "pods"))


def delete_review(old: dict[str, Any], *, user: str, groups: tuple[str, ...]) -> Review:
    return Review(None, old=old, user=user, groups=groups, operation="DELETE")


def store_job(policy: Policy, name: str, *, gpus: int = 1, now: float = 1.0) -> Job:
    """The store job of a researcher's `gpus`-GPU Job `name` in namespace n, as the service
    stages it (decided and audited by the store)."""
    body = review(make_job(gpus=gpus).named("n", name).obj(), user="x", groups=("gpu-researchers",),
                  uid=name).body()
    return admission_job(prepare(parse_review(body), policy), policy, now=now, digest=keyed_digest(bytes(16)))


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_bundle(POLICIES)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def service(policy_dir: Path, store: SQLiteStore) -> AdmissionService:
    return AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics())
