"""Shared by the telemetry tests: admit research/llm-70b (bob, team vision) and its four pods."""

from __future__ import annotations

from typing import Any

from conftest import RESEARCHER, make_pod, make_pytorchjob, review

OPERATOR = "system:serviceaccount:kubeflow:training-operator"
WORKERS = [f"llm-70b-worker-{i}" for i in range(4)]


def llm_admissions() -> list[dict[str, Any]]:
    """AdmissionReviews: bob launches a 4-GPU PyTorchJob, the training operator creates its pods."""
    job = make_pytorchjob(workers=3, gpus=1).named("research", "llm-70b").obj()
    job["metadata"]["uid"] = "uid-llm-70b"
    bodies = [review(job, user="bob", groups=RESEARCHER).body()]
    parent = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "llm-70b", "uid": "uid-llm-70b",
              "controller": True}
    for name in WORKERS:
        pod = make_pod(gpus=1).named("research", name).owned_by("bob", "vision").obj()
        pod["metadata"].update(uid=f"uid-{name}", ownerReferences=[dict(parent)])
        bodies.append(review(pod, user=OPERATOR, groups=("system:serviceaccounts",)).body())
    return bodies
