"""A small stand-in for the API server's side of admission, and for the controllers that act
for people, to drive the real AdmissionService as a cluster would.

The API server: on CREATE the object gets its name (from `generateName`) and UID before
validating admission (as `rest.BeforeCreate` does), the mutating webhook's JSONPatch is
applied before validation, and what validation allows is stored. Controllers make children
as the real ones do: under their own identity, with a controller ownerReference carrying the
parent's UID, and the parent's template metadata and spec copied (kubernetes
pkg/controller/deployment, replicaset, job, cronjob; the training and Ray operators).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from conftest import review
from prometheus_client import CollectorRegistry

from gateway.admission.ports import Actor
from gateway.admission.scheduling_settings import GATEWAY_SERVICE_ACCOUNT
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.controller.ledger import LedgerMetrics
from gateway.scheduling.controller.roots import RootListing
from gateway.scheduling.reconcile import Repair
from gateway.scheduling.roots import root_kinds
from gateway.service import AdmissionService

DEPLOYMENT_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
CRONJOB_CONTROLLER = "system:serviceaccount:kube-system:cronjob-controller"
STATEFULSET_CONTROLLER = "system:serviceaccount:kube-system:statefulset-controller"
HPA = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
TRAINING_OPERATOR = "system:serviceaccount:kubeflow:training-operator"
KUBERAY = "system:serviceaccount:ray-system:kuberay-operator"
SYSTEM = ("system:serviceaccounts", "system:serviceaccounts:kube-system")

_RESOURCES = {"Deployment": ("apps", "deployments"), "ReplicaSet": ("apps", "replicasets"),
              "StatefulSet": ("apps", "statefulsets"), "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"),
              "Pod": ("", "pods"), "PyTorchJob": ("kubeflow.org", "pytorchjobs"),
              "RayCluster": ("ray.io", "rayclusters"), "LeaderWorkerSet": ("leaderworkerset.x-k8s.io",
                                                                           "leaderworkersets")}


@dataclass
class Answer:
    allowed: bool
    message: str
    obj: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, service: AdmissionService) -> None:
        self.service = service
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._uids = itertools.count(1)
        self._names = itertools.count(1)

    # ------------------------------------------------------------- the API server

    def create(self, obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> Answer:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "research")
        body = review(obj, user=user, groups=groups).body()
        out = self.service.mutate(body)["response"]
        if "patch" in out:
            obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(out["patch"])))
        meta = obj["metadata"]
        if not meta.get("name"):
            meta["name"] = f"{meta['generateName']}{next(self._names):05d}"
        meta["uid"] = f"uid-{meta['name']}-{next(self._uids)}"
        body = review(obj, user=user, groups=groups).body()
        return self._store(body, obj)

    def update(self, new: dict[str, Any], user: str, groups: tuple[str, ...]) -> Answer:
        old = self.get(new["kind"], new["metadata"]["name"])
        new = copy.deepcopy(new)
        new["metadata"]["uid"] = old["metadata"]["uid"]
        body = review(new, old=old, user=user, groups=groups, operation="UPDATE").body()
        out = self.service.mutate(body)["response"]
        if "patch" in out:
            new = jsonpatch.apply_patch(new, json.loads(base64.b64decode(out["patch"])))
        body = review(new, old=old, user=user, groups=groups, operation="UPDATE").body()
        return self._store(body, new)

    def scale(self, kind: str, name: str, replicas: int, user: str, groups: tuple[str, ...]) -> Answer:
        """`kubectl scale` or an autoscaler: UPDATE of the `/scale` subresource (autoscaling/v1 Scale)."""
        obj = self.get(kind, name)
        group, resource = _RESOURCES[kind]
        old = {"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": name, "namespace": "research", "uid": obj["metadata"]["uid"]},
               "spec": {"replicas": _current_replicas(obj)}}
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        body = review(new, old=old, user=user, groups=groups, operation="UPDATE", sub_resource="scale",
                      kind=("autoscaling", "v1", "Scale"), resource=(group, resource)).body()
        response = self.service.validate(body)["response"]
        if response["allowed"]:
            _set_replicas(obj, replicas)
            self.objects[(kind, "research", name)] = copy.deepcopy(obj)
        return Answer(response["allowed"], response.get("status", {}).get("message", ""), obj)

    def delete(self, kind: str, name: str, user: str, groups: tuple[str, ...]) -> Answer:
        old = self.get(kind, name)
        body = review(None, old=old, user=user, groups=groups, operation="DELETE").body()
        response = self.service.validate(body)["response"]
        if response["allowed"]:
            del self.objects[(kind, "research", name)]
        return Answer(response["allowed"], response.get("status", {}).get("message", ""), None)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(kind, "research", name)])

    def _store(self, body: dict[str, Any], obj: dict[str, Any]) -> Answer:
        response = self.service.validate(body)["response"]
        if response["allowed"]:
            self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        return Answer(response["allowed"], response.get("status", {}).get("message", ""), obj,
                      response.get("warnings", []))

    # ------------------------------------------------------------- the gateway's controller

    def list_roots(self) -> list[Repair]:
        """The gateway controller's listing of the workloads that predate the gateway, as a real
        install runs it when the controller starts: the same reconciler (its pure selection and
        its store write) over `objects`, as the API server's lists would answer. The roots recorded."""
        policy = self.service.policies.policy
        listing = RootListing(_Lists(self.objects, policy), self.service.store,
                              Actor(GATEWAY_SERVICE_ACCOUNT, (), "controller"),
                              LedgerMetrics(CollectorRegistry()), resync_s=300.0)
        return listing.reconcile(ClusterView((), 0, policy, self.service.clock()))

    # ------------------------------------------------------------- controllers

    def child(self, parent: dict[str, Any], api_version: str, kind: str, template: dict[str, Any],
              spec: dict[str, Any], controller: str, *, name: str | None = None,
              labels: dict[str, str] | None = None) -> Answer:
        """A controller's child of `parent`: `template`'s metadata copied, `spec` as given."""
        meta = copy.deepcopy(template.get("metadata") or {})
        meta["labels"] = {**meta.get("labels", {}), **(labels or {})}
        meta["namespace"] = "research"
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = f"{parent['metadata']['name']}-"
        meta["ownerReferences"] = [{
            "apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": parent["metadata"]["name"],
            "uid": parent["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        return self.create({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec},
                           controller, SYSTEM)

    def replicaset_of(self, deployment: dict[str, Any], replicas: int) -> Answer:
        """The deployment controller's ReplicaSet: name and label from the template's hash."""
        template = copy.deepcopy(deployment["spec"]["template"])
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
        spec = {"replicas": replicas, "selector": deployment["spec"]["selector"], "template": template}
        return self.child(deployment, "apps/v1", "ReplicaSet", template, spec, DEPLOYMENT_CONTROLLER,
                          name=f"{deployment['metadata']['name']}-{digest}")

    def pod_of(self, parent: dict[str, Any], template: dict[str, Any], controller: str,
               labels: dict[str, str] | None = None) -> Answer:
        return self.child(parent, "v1", "Pod", template, copy.deepcopy(template["spec"]), controller,
                          labels=labels)

    def job_of(self, cronjob: dict[str, Any]) -> Answer:
        """The CronJob controller's Job: `jobTemplate` metadata and spec copied."""
        template = cronjob["spec"]["jobTemplate"]
        return self.child(cronjob, "batch/v1", "Job", template, copy.deepcopy(template["spec"]), CRONJOB_CONTROLLER,
                          name=f"{cronjob['metadata']['name']}-{next(self._names):08d}")


def _current_replicas(obj: dict[str, Any]) -> int:
    if obj["kind"] == "PyTorchJob":
        return int(obj["spec"]["pytorchReplicaSpecs"]["Worker"].get("replicas", 1))
    return int(obj["spec"].get("replicas", 1))


def _set_replicas(obj: dict[str, Any], replicas: int) -> None:
    if obj["kind"] == "PyTorchJob":
        obj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = replicas
    else:
        obj["spec"]["replicas"] = replicas


class _Lists:
    """The API server's list of every object of a workload kind, over a `Cluster`'s objects."""

    def __init__(self, objects: dict[tuple[str, str, str], dict[str, Any]], policy: Any) -> None:
        self.objects = objects
        self.kinds = {k.resource_key: k for k in root_kinds(policy.kinds)}

    def workload_pages(self, resource_key: str, *, limit: int = 500) -> Any:
        kind = self.kinds[resource_key]
        yield [copy.deepcopy(obj) for obj in self.objects.values() if obj["kind"] == kind.kind
               and obj.get("apiVersion", "").rpartition("/")[0] == kind.group]
