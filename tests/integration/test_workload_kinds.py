"""Registered workload kinds and uncountable GPUs through the real ASGI app and SQLite store:
/mutate, the patch applied as the API server applies it, then /validate."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from builders_workloads import load_crd
from conftest import ADMIN, INTERN, RESEARCHER, delete_review, review

from gateway.service import AdmissionService
from gateway.webhook.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from starlette.testclient import TestClient

OWNER = "gpu-gateway.io/owner"


@pytest.fixture
def client(service: AdmissionService) -> Iterator[TestClient]:
    with TestClient(create_app(service), base_url="http://127.0.0.1") as c:
        yield c


def submit(client: TestClient, obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """CREATE as the API server sends it: mutate, apply the patch, validate the patched object."""
    body = review(obj, user=user, groups=groups).body()
    mutated = client.post("/mutate", json=body).json()["response"]
    assert mutated["allowed"] is True
    if "patch" in mutated:
        body["request"]["object"] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(mutated["patch"])))
    response: dict[str, Any] = client.post("/validate", json=body).json()["response"]
    response["object"] = body["request"]["object"]
    return response


def test_an_interns_trainjob_without_resources_per_node_is_denied_saying_why(client, store):
    resp = submit(client, load_crd("trainjob-runtime.yaml"), "alice", INTERN)
    assert resp["allowed"] is False
    assert resp["status"]["message"] == (
        "gpu-gateway: denied launch of TrainJob research/qwen-pretrain: user alice (role intern) has GPU caps, "
        "so the gateway must count every GPU, and TrainJob research/qwen-pretrain takes its GPUs from runtime "
        "torch-distributed, which the gateway cannot read; set spec.trainer.resourcesPerNode. Make its GPUs "
        "countable as said (for a kind of your own, register it in limits.yaml workload_kinds, see README), or "
        "ask an administrator to launch it.")
    assert store.reservations() == []
    [row] = [r for r in store.audit_rows() if r["name"] == "qwen-pretrain"]
    assert (row["rule"], row["decision"]) == ("unresolved-gpus", "denied")


def test_the_same_trainjob_with_resources_per_node_is_counted_and_admitted(client, store):
    tj = load_crd("trainjob-runtime.yaml")
    tj["spec"]["trainer"]["numNodes"] = 1
    tj["spec"]["trainer"]["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": 8}}
    assert submit(client, tj, "alice", INTERN)["allowed"] is True
    [row] = store.reservations()
    assert (row.owner, row.gpus) == ("alice", 8)


def test_an_admins_unresolved_trainjob_is_allowed_owned_and_audited(client, store):
    resp = submit(client, load_crd("trainjob-runtime.yaml"), "root", ADMIN)
    assert resp["allowed"] is True
    assert resp["object"]["metadata"]["annotations"][OWNER] == "root"
    [row] = store.reservations()
    assert (row.owner, row.gpus) == ("root", 0)
    [audit] = [r for r in store.audit_rows() if r["name"] == "qwen-pretrain"]
    assert audit["decision"] == "allowed"
    assert "plus GPUs it cannot count: it takes its GPUs from runtime torch-distributed" in audit["reason"]
    # Recorded as the admin's: an intern may not delete it.
    gone = client.post("/validate", json=delete_review(resp["object"], user="eve", groups=INTERN).body())
    assert gone.json()["response"]["allowed"] is False


def test_an_interns_16_gpu_spark_application_is_denied_by_the_workload_limit(client, store):
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["executor"]["instances"] = 15  # + the driver's GPU: 16
    resp = submit(client, app, "alice", INTERN)
    assert resp["allowed"] is False
    assert resp["status"]["message"] == (
        "gpu-gateway: denied launch of SparkApplication research/rapids-etl: user alice (role intern) may launch "
        "at most 8 GPUs per workload; this one asks for 16 (16 pods x 1 nvidia.com/gpu). "
        "Ask for an exception (gpuctl request launch SparkApplication research/rapids-etl --gpus 16 --reason ...): "
        "a lead in team vision (group gpu-leads) or an admin (group gpu-admins) may approve it.")
    assert store.reservations() == []


def test_a_researchers_inference_service_is_charged_at_max_replicas(client, store):
    resp = submit(client, load_crd("inferenceservice-llama.yaml"), "bob", RESEARCHER)
    assert resp["allowed"] is True
    [row] = store.reservations()
    assert (row.owner, row.team, row.gpus) == ("bob", "vision", 3)
    assert resp["object"]["metadata"]["annotations"][OWNER] == "bob"


def test_an_inference_service_that_may_scale_without_bound_is_denied_to_a_researcher(client):
    isvc = load_crd("inferenceservice-llama.yaml")
    del isvc["spec"]["predictor"]["maxReplicas"]
    resp = submit(client, isvc, "bob", RESEARCHER)
    assert resp["allowed"] is False
    assert ("InferenceService research/llama3-8b-instruct may run spec.predictor without a bound it can read "
            "(spec.predictor.maxReplicas is not set); set spec.predictor.maxReplicas") in resp["status"]["message"]


def test_an_argo_sweep_is_charged_for_every_item(client, store):
    wf = load_crd("workflow-sweep.yaml")
    wf["metadata"]["name"] = "lr-sweep-1"
    assert submit(client, wf, "alice", INTERN)["allowed"] is True  # 4 items x 2 GPUs = 8
    wf["metadata"]["name"] = "lr-sweep-2"
    wf["spec"]["templates"][0]["steps"][0][0]["withItems"].append("1e-5")
    resp = submit(client, wf, "alice", INTERN)
    assert resp["allowed"] is False and "asks for 10 (5 pods x 2 nvidia.com/gpu)" in resp["status"]["message"]


def test_an_unregistered_kind_naming_a_gpu_is_denied_to_an_intern(client):
    odd = {"apiVersion": "kubeflow.org/v1alpha1", "kind": "ModelServer",
           "metadata": {"name": "chat", "namespace": "research"},
           "spec": {"replicas": 4, "accelerator": {"name": "nvidia.com/gpu", "count": 8}}}
    resp = submit(client, odd, "alice", INTERN)
    assert resp["allowed"] is False
    assert ("ModelServer research/chat names nvidia.com/gpu at spec.accelerator.name, where the gateway does not "
            "count GPUs; add a workload_kinds entry for kubeflow.org/ModelServer to limits.yaml"
            ) in resp["status"]["message"]


def test_a_notebook_is_stamped_and_charged(client, store):
    resp = submit(client, load_crd("notebook.yaml"), "alice", INTERN)
    assert resp["allowed"] is True
    assert resp["object"]["spec"]["template"]["metadata"]["annotations"][OWNER] == "alice"
    assert [r.gpus for r in store.reservations()] == [1]
