"""A quick fuzz run (about 20 s) of the AdmissionReview parser and the whole HTTP handler.

Cases come from the real manifests in tests/fixtures, mutated (fuzz/cases.py), and are
answered by the real app with a real SQLite store; fuzz/checks.py states the goals: no 5xx,
no exception escaping, no allow of what the gateway could not read, the request uid echoed.
The long run is `python3 -m fuzz --cases 100000`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fuzz.cases import Case, make_case
    from fuzz.checks import Target, check, target
    from fuzz.strategies import cases

from gateway.admission.review import parse_review
from gateway.errors import ReviewError


@pytest.fixture(scope="module")
def app() -> Iterator[Target]:
    with target() as t:
        yield t


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_the_handler_meets_every_goal_on_mutated_reviews(app: Target, case: Case):
    assert check(app, case) == "", case.describe()


def test_broken_gpu_quantities_are_denied_for_every_identity(app: Target):
    """Every case built with a broken GPU quantity among the first 1,500 reaches /validate denied."""
    built = [c for c in map(make_case, range(1500)) if c.must_deny and c.endpoint == "/validate"]
    assert len(built) > 50
    for case in built:
        assert check(app, case) == "", case.describe()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_the_parser_reads_or_refuses_with_a_review_error(case: Case):
    import orjson

    try:
        body = orjson.loads(case.body)
    except orjson.JSONDecodeError:
        return
    try:
        req = parse_review(body)
    except ReviewError as exc:
        assert str(exc)
        return
    assert isinstance(req.uid, str) and req.uid


@pytest.mark.parametrize("quantity", ["8 ", " 8", "\uff18", "8_0"])
def test_quantities_the_api_server_refuses_are_not_read_as_gpus(app: Target, quantity: str):
    """Found by the fuzzer: Python's Decimal read these as 8 GPUs; Kubernetes refuses them."""
    import json

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "research"},
           "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": quantity}}}]}}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "q-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "research", "name": "p",
        "operation": "CREATE", "userInfo": {"username": "root", "groups": ["gpu-admins"]}, "object": pod}}
    case = Case(0, "/validate", "application/json", json.dumps(body).encode())
    status, content = app.post(case)
    response = json.loads(content)["response"]
    assert status == 200 and response["allowed"] is False and response["uid"] == "q-1"
    assert "is not a Kubernetes quantity" in response["status"]["message"]
