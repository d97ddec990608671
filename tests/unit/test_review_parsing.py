"""AdmissionReview parsing: clear errors on anything that is not a v1 review, never a crash."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from conftest import make_pod, review
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.review import parse_review, review_response
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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.update(apiVersion="admission.k8s.io/v1beta1"), "is not supported"),
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
