"""Builders for queue-mode tests: a queue-mode policy bundle, and admitting a Job and its pods
through the real AdmissionService as the API server would (mutate, apply the patch, validate)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from conftest import POLICIES, RESEARCHER, make_job, review

from gateway.admission.ports import Actor
from gateway.service import AdmissionService

GATEWAY = "system:serviceaccount:gpu-gateway:gpu-gateway"
JOB_CONTROLLER = ("system:serviceaccount:kube-system:job-controller", ("system:serviceaccounts",))
ACTOR = Actor(GATEWAY, (), "")


def queue_policies(target: Path, **scheduling: Any) -> Path:
    """The bundled policies with researchers in queue mode and a 32-GPU researcher cap."""
    shutil.copytree(POLICIES, target)
    path = target / "limits.yaml"
    limits = yaml.safe_load(path.read_text())
    limits["roles"]["researcher"]["max_concurrent_gpus"] = 32
    limits["scheduling"].update({"roles": {"researcher": "queue"}, **scheduling})
    path.write_text(yaml.safe_dump(limits))
    return target


def mutated(service: AdmissionService, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """`obj` as the API server stores it after the mutating webhook's patch."""
    answer = service.mutate(review(obj, **kw).body())["response"]
    if "patch" not in answer:
        return obj
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))


def validate(service: AdmissionService, obj: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    return service.validate(review(obj, **kw).body())["response"]


def job_pods(job: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The pods the Job controller creates from the stored Job's template, each with the
    controller ownerReference to the Job (its UID) and a UID of its own, as the API server
    shows them to validating admission."""
    template = job["spec"]["template"]
    job_meta = job["metadata"]
    job_uid = job_meta.setdefault("uid", f"uid-job-{job_meta['name']}")
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job_meta["name"], "uid": job_uid,
             "controller": True, "blockOwnerDeletion": True}
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{job_meta['name']}-{i}", "namespace": "research",
                          "uid": f"uid-pod-{job_meta['name']}-{i}", "ownerReferences": [dict(owner)],
                          "annotations": dict(template["metadata"]["annotations"])},
             "spec": json.loads(json.dumps(template["spec"]))} for i in range(n)]


def launch_job(service: AdmissionService, name: str, pods: int, gpus: int = 8) -> tuple[dict[str, Any], list]:
    job = mutated(service, make_job(gpus=gpus, parallelism=pods).named("research", name).obj(),
                  user="bob", groups=RESEARCHER)
    job["metadata"]["uid"] = f"uid-job-{name}"
    answer = validate(service, job, user="bob", groups=RESEARCHER)
    assert answer["allowed"], answer
    created = []
    for pod in job_pods(job, pods):
        user, groups = JOB_CONTROLLER
        pod = mutated(service, pod, user=user, groups=groups)
        assert validate(service, pod, user=user, groups=groups)["allowed"]
        created.append(pod)
    return job, created


GARBAGE_COLLECTOR = ("system:serviceaccount:kube-system:generic-garbage-collector", ("system:serviceaccounts",))


def delete_job(service: AdmissionService, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
    """bob deletes `job`; the garbage collector then deletes its `pods`, which never ran on a
    node (the API server removes them at once). Until they are gone they hold the Job's GPUs."""
    assert service.validate(review(None, old=job, user="bob", groups=RESEARCHER, operation="DELETE").body())[
        "response"]["allowed"]
    user, groups = GARBAGE_COLLECTOR
    for pod in pods:
        assert service.validate(review(None, old=pod, user=user, groups=groups, operation="DELETE").body())[
            "response"]["allowed"]


def review_body(obj: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    """The AdmissionReview body of `obj` (conftest.review), for callers without the Review type."""
    return review(obj, **kw).body()
