"""The ownership stamp: JSONPatch that applies cleanly and overwrites spoofed owners."""

from __future__ import annotations

import copy
from typing import Any

from conftest import INTERN, RESEARCHER, make_job, make_pod, make_pytorchjob, review

from gateway.admission.admission import prepare
from gateway.admission.mutation import ownership_patch
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review


def apply(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A small RFC 6902 add/replace applier (what the API server does with the patch)."""
    out = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] in ("add", "replace")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        node: Any = out
        for t in tokens[:-1]:
            node = node[int(t)] if isinstance(node, list) else node[t]
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
    assert [op["path"] for op in ops] == ["/metadata/annotations", "/metadata/labels"]


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


def _load(name: str) -> dict[str, Any]:
    import yaml
    from conftest import FIXTURES

    return dict(yaml.safe_load((FIXTURES / "crds" / name).read_text()))


def test_templates_inside_lists_are_stamped(policy: Policy) -> None:
    """JobSet replicatedJobs, Volcano tasks and Ray worker groups keep templates in lists."""
    from gateway.admission.pointer import annotations_at
    from gateway.admission.workloads import read_workload, template_paths

    for name in ("jobset.yaml", "volcano-job.yaml", "raycluster-autoscaling.yaml"):
        obj = _load(name)
        group, kind = obj["apiVersion"].rpartition("/")[0], obj["kind"]
        out = stamp(policy, obj, "lead1", ("gpu-leads", "team:vision"))
        workload = read_workload(out, group, kind, policy.gpu)
        paths = list(template_paths(workload))
        assert any("/0/" in p for p in paths), name
        for pointer in paths:
            assert annotations_at(out, pointer).get("gpu-gateway.io/owner") == "lead1", (name, pointer)


def test_a_forged_owner_in_a_listed_template_is_denied(policy: Policy) -> None:
    from gateway.admission.admission import Facts, decide

    obj = _load("jobset.yaml")
    template = obj["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("annotations", {})["gpu-gateway.io/owner"] = "bob"
    plan = prepare(parse_review(review(obj, user="lead1", groups=("gpu-leads", "team:vision")).body()), policy)
    d = decide(plan, policy, Facts())
    assert not d.allowed and d.rule == "owner-annotation"
