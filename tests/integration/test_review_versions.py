"""AdmissionReview versions over the real TLS server: a v1beta1 review (webhook configurations
that list v1beta1 first still exist) is decided as its v1 twin and answered in v1beta1, as the
API server requires; a version gpu-gateway does not read is refused clearly."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import INTERN, RESEARCHER, delete_review, make_job, make_pytorchjob, review
from served import Served, start_server, stop_server

V1, V1BETA1 = "admission.k8s.io/v1", "admission.k8s.io/v1beta1"


def v1beta1(body: dict[str, Any]) -> dict[str, Any]:
    """The review as the API server sends it in v1beta1: the same request, another apiVersion."""
    return {**body, "apiVersion": V1BETA1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(tmp_path_factory.mktemp("versions"))
    yield served
    stop_server(served)


def post(c: httpx.Client, path: str, body: Any) -> dict[str, Any]:
    r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def without_uid(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer["response"].items() if k != "uid"}


def test_a_v1beta1_denial_is_the_v1_denial_in_v1beta1(server: Served) -> None:
    job = make_pytorchjob().obj()
    as_v1 = review(job, user="alice", groups=INTERN).body()
    as_v1beta1 = v1beta1(review(job, user="alice", groups=INTERN).body())
    with server.client() as c:
        a, b = post(c, "/validate", as_v1), post(c, "/validate", as_v1beta1)
    assert (a["apiVersion"], b["apiVersion"]) == (V1, V1BETA1)
    assert b["kind"] == "AdmissionReview" and b["response"]["uid"] == as_v1beta1["request"]["uid"]
    assert b["response"]["allowed"] is False and b["response"]["status"]["code"] == 403
    assert "may launch at most 8 GPUs per workload" in b["response"]["status"]["message"]
    assert without_uid(b) == without_uid(a)


def test_a_v1beta1_launch_is_recorded_and_its_kill_decided_in_v1beta1(server: Served) -> None:
    job = make_job(gpus=8).named("research", "beta-run").obj()
    job["metadata"]["uid"] = "uid-beta-run"
    with server.client() as c:
        launched = post(c, "/validate", v1beta1(review(job, user="bob", groups=RESEARCHER).body()))
        assert launched["apiVersion"] == V1BETA1 and launched["response"]["allowed"] is True
        kill = post(c, "/validate", v1beta1(delete_review(job, user="alice", groups=INTERN).body()))
    assert kill["apiVersion"] == V1BETA1 and kill["response"]["allowed"] is False
    assert "belongs to bob" in kill["response"]["status"]["message"]  # the ledger holds the v1beta1 launch


def test_a_v1beta1_mutation_carries_the_v1_patch_in_v1beta1(server: Served) -> None:
    job = make_job(gpus=8).obj()
    as_v1 = review(job, user="bob", groups=RESEARCHER).body()
    as_v1beta1 = v1beta1(review(job, user="bob", groups=RESEARCHER).body())
    with server.client() as c:
        a, b = post(c, "/mutate", as_v1), post(c, "/mutate", as_v1beta1)
    assert b["apiVersion"] == V1BETA1 and b["response"]["uid"] == as_v1beta1["request"]["uid"]
    assert b["response"]["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(b["response"]["patch"]))
    assert any(op["path"] == "/metadata/annotations" and op["value"]["gpu-gateway.io/owner"] == "bob" for op in ops)
    assert without_uid(b) == without_uid(a)


def test_an_unreadable_v1beta1_review_is_denied_in_v1beta1(server: Served) -> None:
    body = v1beta1(review(make_job(gpus=8).obj(), user="bob", groups=RESEARCHER).body())
    del body["request"]["operation"]
    with server.client() as c:
        for path in ("/validate", "/mutate"):
            answer = post(c, path, body)
            assert answer["apiVersion"] == V1BETA1 and answer["response"]["allowed"] is False
            assert answer["response"]["status"]["code"] == 400
            assert "request.operation is missing" in answer["response"]["status"]["message"]


def test_a_version_gpu_gateway_does_not_read_is_refused_naming_those_it_reads(server: Served) -> None:
    body = review(make_job(gpus=8).obj(), user="bob", groups=RESEARCHER).body()
    body["apiVersion"] = "admission.k8s.io/v2"
    with server.client() as c:
        # A readable uid: a deny (in v1) that says why.
        answer = post(c, "/validate", body)
        assert answer["apiVersion"] == V1 and answer["response"]["allowed"] is False
        assert answer["response"]["status"]["code"] == 400
        assert ("apiVersion 'admission.k8s.io/v2' is not supported; send one of admission.k8s.io/v1, "
                "admission.k8s.io/v1beta1") in answer["response"]["status"]["message"]
        # No uid to answer: HTTP 400.
        del body["request"]["uid"]
        r = c.post("/validate", json=body)
    assert r.status_code == 400 and "is not supported" in r.json()["error"]

