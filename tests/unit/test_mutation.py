"""The ownership stamp: JSONPatch that applies cleanly and overwrites spoofed owners."""

from __future__ import annotations

import copy
from typing import Any

from conftest import INTERN, RESEARCHER, make_job, make_pod, make_pytorchjob, review

from gateway.core.admission import prepare
from gateway.core.mutation import ownership_patch
from gateway.core.policy import Policy
from gateway.core.review import parse_review


def apply(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A small RFC 6902 add/replace applier (what the API server does with the patch)."""
    out = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] in ("add", "replace")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        node = out
        for t in tokens[:-1]:
            node = node[t]
        if op["op"] == "replace":
            assert tokens[-1] in node
        node[tokens[-1]] = op["value"]
    return out


def stamp(policy: Policy, obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    return apply(obj, ownership_patch(prepare(parse_review(review(obj, user=user, groups=groups).body()), policy)))


def test_every_template_gets_owner_and_team(policy: Policy) -> None:
    out = stamp(policy, make_pytorchjob(workers=3, gpus=8).obj(), "bob", RESEARCHER)
    for role in ("Master", "Worker"):
        ann = out["spec"]["pytorchReplicaSpecs"][role]["template"]["metadata"]["annotations"]
        assert ann == {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "vision"}
    assert out["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"


def test_a_spoofed_owner_is_overwritten_and_other_annotations_kept(policy: Policy) -> None:
    job = make_job(gpus=1).owned_by("bob").annotated(note="keep me").obj()
    job["spec"]["template"]["metadata"] = {"annotations": {"gpu-gateway.io/owner": "bob"}}
    out = stamp(policy, job, "alice", INTERN)
    assert out["metadata"]["annotations"] == {"gpu-gateway.io/owner": "alice", "note": "keep me",
                                              "gpu-gateway.io/team": "vision"}
    assert out["spec"]["template"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "alice"


def test_a_bare_pod_is_stamped_once(policy: Policy) -> None:
    ops = ownership_patch(prepare(parse_review(review(make_pod(gpus=1).obj(), user="bob",
                                                      groups=RESEARCHER).body()), policy))
    assert len(ops) == 1 and ops[0]["path"] == "/metadata/annotations"


def test_non_gpu_and_controller_objects_are_not_patched(policy: Policy) -> None:
    assert ownership_patch(prepare(parse_review(review(make_pod(gpus=0).obj(), user="bob",
                                                       groups=RESEARCHER).body()), policy)) == []
    sa = "system:serviceaccount:kube-system:job-controller"
    assert ownership_patch(prepare(parse_review(review(make_pod(gpus=1).obj(), user=sa,
                                                       groups=()).body()), policy)) == []


def test_a_foreign_team_annotation_is_left_for_validation_to_deny(policy: Policy) -> None:
    job = make_job(gpus=1).annotated(**{"gpu-gateway.io/team": "nlp"}).obj()
    out = stamp(policy, job, "alice", INTERN)
    assert out["metadata"]["annotations"]["gpu-gateway.io/team"] == "nlp"
