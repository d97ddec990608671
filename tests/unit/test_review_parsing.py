"""AdmissionReview parsing: v1 and v1beta1 read alike, clear errors on anything else, never a crash."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from conftest import make_pod, review
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.review import answer_version, parse_review, review_response
from gateway.errors import ReviewError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def test_a_kubectl_shaped_review_parses() -> None:
    req = parse_review(review(make_pod().obj(), user="alice", groups=("gpu-interns",)).body())
    assert (req.operation, req.kind.kind, req.resource, req.username) == ("CREATE", "Pod", "pods", "alice")
    assert req.groups == ("gpu-interns", "system:authenticated")


def test_a_v1beta1_review_reads_as_its_v1_twin_and_keeps_its_version() -> None:
    body = review(make_pod().obj(), user="alice", groups=("gpu-interns",)).body()
    v1 = parse_review(body)
    v1beta1 = parse_review({**body, "apiVersion": "admission.k8s.io/v1beta1"})
    assert (v1.api_version, v1beta1.api_version) == ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
    v1beta1.api_version = v1.api_version
    assert v1beta1 == v1


def test_an_answer_carries_the_version_it_is_given_with_the_same_fields() -> None:
    v1 = review_response("u", True, warnings=("w",), patch="cGF0Y2g=")
    v1beta1 = review_response("u", True, warnings=("w",), patch="cGF0Y2g=", api_version="admission.k8s.io/v1beta1")
    assert v1["apiVersion"] == "admission.k8s.io/v1" and v1beta1["apiVersion"] == "admission.k8s.io/v1beta1"
    assert v1beta1["response"] == v1["response"]


@pytest.mark.parametrize(
    ("body", "version"),
    [
        ({"apiVersion": "admission.k8s.io/v1beta1", "request": {}}, "admission.k8s.io/v1beta1"),
        ({"apiVersion": "admission.k8s.io/v1"}, "admission.k8s.io/v1"),
        ({"apiVersion": "admission.k8s.io/v2"}, "admission.k8s.io/v1"),
        ({"apiVersion": ["admission.k8s.io/v1beta1"]}, "admission.k8s.io/v1"),
        ([1, 2], "admission.k8s.io/v1"),
        (None, "admission.k8s.io/v1"),
    ],
)
def test_even_an_unreadable_body_is_answered_in_its_version_when_it_is_one_we_read(body: Any, version: str) -> None:
    assert answer_version(body) == version


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.update(apiVersion="admission.k8s.io/v2"), "'admission.k8s.io/v2' is not supported; send one of "
                                                               "admission.k8s.io/v1, admission.k8s.io/v1beta1"),
        (lambda b: b.update(kind="Pod"), "is not AdmissionReview"),
        (lambda b: b.pop("request"), "request is missing"),
        (lambda b: b["request"].pop("uid"), "request.uid is missing"),
        (lambda b: b["request"].update(operation="PATCH"), "request.operation"),
        (lambda b: b["request"].pop("userInfo"), "userInfo is missing"),
        (lambda b: b["request"]["userInfo"].update(groups="admins"), "groups must be a list"),
        (lambda b: b["request"].pop("object"), "request.object is missing for CREATE"),
        (lambda b: b["request"].update(dryRun="yes"), "dryRun must be a boolean"),
    ],
)
def test_malformed_reviews_raise_a_clear_error(mutate: Any, message: str) -> None:
    body = review(make_pod().obj()).body()
    mutate(body)
    with pytest.raises(ReviewError, match=message):
        parse_review(body)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes_the_parser(body: Any) -> None:
    with contextlib.suppress(ReviewError):
        parse_review(body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["uid", "kind", "resource", "operation", "userInfo", "object",
                                        "oldObject", "dryRun", "namespace", "name", "subResource"]),
                       json_values, max_size=11))
def test_arbitrary_request_fields_never_crash_the_parser(request: dict[str, Any]) -> None:
    with contextlib.suppress(ReviewError):
        parse_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def test_a_deny_response_carries_uid_code_and_message() -> None:
    out = review_response("u", False, message="no")
    assert out["response"] == {"uid": "u", "allowed": False,
                               "status": {"code": 403, "message": "no", "reason": "Forbidden"}}
