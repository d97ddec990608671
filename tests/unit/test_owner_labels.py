"""Owner and team as labels: the label-safe form, the stamp on every template, and that a person
cannot set or change them (admission/labels.py, admission/mutation.py, the validating checks)."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
from conftest import INTERN, RESEARCHER, make_deployment, make_job, make_pod, make_pytorchjob, review
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.decision import Decision
from gateway.admission.labels import OWNER_LABEL, TEAM_LABEL, label_value
from gateway.admission.mutation import ownership_patch
from gateway.admission.pointer import annotations_at, labels_at
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review
from gateway.admission.workloads import read_workload, template_paths

#: apimachinery's IsValidLabelValue, written out independently of the code under test.
VALID_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PROPERTIES = settings(max_examples=500, deadline=None, derandomize=True)


def apply(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSONPatch applied as the API server applies it."""
    return dict(jsonpatch.apply_patch(obj, ops))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and VALID_LABEL_VALUE.match(value) is not None and "\n" not in value


# ------------------------------------------------------------------ the label-safe form


@PROPERTIES
@given(st.text(max_size=200))
def test_every_name_becomes_a_valid_label_value(name: str) -> None:
    value = label_value(name)
    assert is_label_value(value), (name, value)
    assert label_value(name) == value  # deterministic


@PROPERTIES
@given(st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z"))
def test_a_valid_label_value_is_kept_as_it_is(name: str) -> None:
    assert label_value(name) == name


@PROPERTIES
@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120))
def test_names_that_are_not_label_values_keep_apart(a: str, b: str) -> None:
    if a != b and not is_label_value(a) and not is_label_value(b):
        assert label_value(a) != label_value(b)


def test_the_label_safe_form_stays_readable() -> None:
    assert label_value("alice@example.com") == "alice_example.com-ff8d9819fc"
    assert label_value("system:serviceaccount:ml:trainer") == "system_serviceaccount_ml_trainer-1669fd81a9"
    assert label_value("a@b") != label_value("a:b")  # alike once cleaned, kept apart by the digest
    long = "x" * 80
    assert label_value(long).startswith("x" * 52 + "-") and len(label_value(long)) == 63
    assert label_value("@@@") == label_value("@@@") and is_label_value(label_value("@@@"))
    assert label_value("bob") == "bob" and label_value("") == ""


# ------------------------------------------------------------------ the stamp


def stamped(policy: Policy, obj: dict[str, Any], user: str, groups: tuple[str, ...], **kw: Any) -> dict[str, Any]:
    body = review(obj, user=user, groups=groups, **kw).body()
    return apply(obj, ownership_patch(prepare(parse_review(body), policy)))


def selected(objs: list[dict[str, Any]], selector: dict[str, str]) -> list[dict[str, Any]]:
    """What `kubectl get -l k=v,...` lists: objects whose metadata.labels hold every pair."""
    return [o for o in objs if all(labels_at(o).get(k) == v for k, v in selector.items())]


def test_kubectl_selects_a_teams_pytorchjobs_and_shows_their_owner(policy: Policy) -> None:
    jobs = [stamped(policy, make_pytorchjob(workers=3).named("research", n).obj(), user, groups)
            for n, user, groups in (("llm-a", "bob", RESEARCHER), ("llm-b", "nina", ("gpu-researchers", "team:nlp")),
                                    ("llm-c", "alice@example.com", RESEARCHER))]
    vision = selected(jobs, {TEAM_LABEL: "vision"})
    # kubectl get pytorchjobs -l gpu-gateway.io/team=vision -L gpu-gateway.io/owner
    assert [(j["metadata"]["name"], labels_at(j)[OWNER_LABEL]) for j in vision] == [
        ("llm-a", "bob"), ("llm-c", "alice_example.com-ff8d9819fc")]
    assert annotations_at(jobs[2])[OWNER_LABEL] == "alice@example.com"  # the annotation stays exact
    assert selected(jobs, {OWNER_LABEL: label_value("alice@example.com")}) == [jobs[2]]


def test_every_pod_template_carries_the_labels_so_the_pods_do(policy: Policy) -> None:
    out = stamped(policy, make_pytorchjob(workers=3).obj(), "system:serviceaccount:ml:trainer", RESEARCHER)
    workload = read_workload(out, "kubeflow.org", "PyTorchJob", policy.gpu)
    for pointer in ("", *template_paths(workload)):
        assert labels_at(out, pointer) == {OWNER_LABEL: "system_serviceaccount_ml_trainer-1669fd81a9",
                                           TEAM_LABEL: "vision"}, pointer
        assert annotations_at(out, pointer)[OWNER_LABEL] == "system:serviceaccount:ml:trainer"


def test_a_spoofed_label_is_overwritten_and_other_labels_kept(policy: Policy) -> None:
    deployment = make_deployment(gpus=1, replicas=2).obj()
    deployment["metadata"]["labels"] = {OWNER_LABEL: "bob", TEAM_LABEL: "nlp", "app": "x"}
    deployment["spec"]["template"]["metadata"]["labels"][OWNER_LABEL] = "bob"
    out = stamped(policy, deployment, "alice", INTERN)
    assert labels_at(out) == {OWNER_LABEL: "alice", TEAM_LABEL: "vision", "app": "x"}
    template = labels_at(out, "/spec/template")
    assert template == {"app": "x", OWNER_LABEL: "alice", TEAM_LABEL: "vision"}
    assert all(template[k] == v for k, v in out["spec"]["selector"]["matchLabels"].items())  # still selected


def test_a_data_object_gets_the_labels_too(policy: Policy) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "research"},
          "data": {"a": "1"}}
    out = stamped(policy, cm, "alice@example.com", INTERN)
    assert labels_at(out) == {OWNER_LABEL: label_value("alice@example.com"), TEAM_LABEL: "vision"}
    assert annotations_at(out)[OWNER_LABEL] == "alice@example.com"


def _update_ops(policy: Policy, old: dict[str, Any], new: dict[str, Any], user: str = "bob",
                groups: tuple[str, ...] = RESEARCHER) -> list[dict[str, Any]]:
    body = review(new, old=old, user=user, groups=groups, operation="UPDATE").body()
    return ownership_patch(prepare(parse_review(body), policy))


def test_an_update_restamps_labels_only_on_objects_admitted_with_them(policy: Policy) -> None:
    legacy = make_job(gpus=8).owned_by("bob", "vision").obj()
    legacy["spec"]["template"]["metadata"] = {"annotations": {OWNER_LABEL: "bob", TEAM_LABEL: "vision"}}
    edited = copy.deepcopy(legacy)
    edited["metadata"]["annotations"]["note"] = "x"
    # From before labels: no label is added (a Job's template cannot change; a Deployment would restart).
    assert _update_ops(policy, legacy, edited) == []
    labelled = stamped(policy, make_job(gpus=8).obj(), "bob", RESEARCHER)
    dropped = copy.deepcopy(labelled)
    del dropped["metadata"]["labels"][OWNER_LABEL]
    out = apply(dropped, _update_ops(policy, labelled, dropped))
    assert labels_at(out) == labels_at(labelled) == {OWNER_LABEL: "bob", TEAM_LABEL: "vision"}


def test_a_reassignment_moves_the_labels_with_the_annotations(policy: Policy) -> None:
    old = stamped(policy, make_job(gpus=8).obj(), "bob", RESEARCHER)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][OWNER_LABEL] = "carol@example.com"
    out = apply(new, _update_ops(policy, old, new, user="root", groups=("gpu-admins",)))
    for pointer in ("", "/spec/template"):
        assert labels_at(out, pointer)[OWNER_LABEL] == label_value("carol@example.com"), pointer


# ------------------------------------------------------------------ the validating checks


def run(policy: Policy, body: dict[str, Any], facts: Facts | None = None) -> Decision:
    return decide(prepare(parse_review(body), policy), policy, facts or Facts())


BOBS_JOB = Target(owner="bob", team="vision", role="researcher", gpus=8, uid="u1", root_uid="u1")


def test_a_create_carrying_someone_elses_labels_is_denied(policy: Policy) -> None:
    """The mutating webhook did not run (failed open): the validating one still refuses forged labels."""
    job = make_job(gpus=8).obj()
    job["metadata"]["labels"] = {OWNER_LABEL: "bob"}
    d = run(policy, review(job, user="alice", groups=INTERN).body())
    assert not d.allowed and d.rule == "owner-annotation" and "label gpu-gateway.io/owner" in d.reason
    job["metadata"]["labels"] = {OWNER_LABEL: "alice", TEAM_LABEL: "nlp"}
    d = run(policy, review(job, user="alice", groups=INTERN).body())
    assert not d.allowed and d.rule == "team-annotation"
    job = make_job(gpus=8).obj()
    job["spec"]["template"]["metadata"] = {"labels": {OWNER_LABEL: "bob"}}
    d = run(policy, review(job, user="alice", groups=INTERN).body())
    assert not d.allowed and "spec.template" in d.reason


def test_a_create_with_the_stamped_labels_or_none_is_allowed(policy: Policy) -> None:
    assert run(policy, review(make_job(gpus=8).obj(), user="alice@example.com", groups=INTERN).body()).allowed
    out = stamped(policy, make_job(gpus=8).obj(), "alice@example.com", INTERN)
    assert run(policy, review(out, user="alice@example.com", groups=INTERN).body()).allowed


def test_an_update_may_not_change_or_remove_the_labels(policy: Policy) -> None:
    old = stamped(policy, make_job(gpus=8).named("research", "j").obj(), "bob", RESEARCHER)
    for change in ({OWNER_LABEL: "eve"}, {TEAM_LABEL: "nlp"}, {}):
        new = copy.deepcopy(old)
        new["metadata"]["labels"] = {**{k: v for k, v in new["metadata"]["labels"].items() if k in change}, **change}
        d = run(policy, review(new, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body(),
                Facts(target=BOBS_JOB))
        assert not d.allowed and d.rule in ("owner-annotation", "team-annotation"), change
    same = copy.deepcopy(old)
    same["metadata"]["annotations"]["note"] = "x"
    assert run(policy, review(same, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body(),
               Facts(target=BOBS_JOB)).allowed


def test_an_update_leaving_labels_from_before_the_gateway_as_they_were_is_allowed(policy: Policy) -> None:
    old = make_job(gpus=8).named("research", "j").owned_by("bob", "vision").obj()
    old["metadata"]["labels"] = {OWNER_LABEL: "someone-before"}
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["note"] = "x"
    assert run(policy, review(new, old=old, user="bob", groups=RESEARCHER, operation="UPDATE").body(),
               Facts(target=BOBS_JOB)).allowed


def test_data_objects_labels_are_protected_the_same_way(policy: Policy) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "research",
                                                                 "labels": {OWNER_LABEL: "bob"}}}
    d = run(policy, review(cm, user="alice", groups=INTERN).body())
    assert not d.allowed and d.rule == "owner-annotation"
    old = stamped(policy, {**cm, "metadata": {"name": "cfg", "namespace": "research"}}, "alice", INTERN)
    new = copy.deepcopy(old)
    new["metadata"]["labels"][OWNER_LABEL] = "bob"
    alices = Target(owner="alice", team="vision", role="intern", gpus=0, charged=False)
    d = run(policy, review(new, old=old, user="alice", groups=INTERN, operation="UPDATE").body(), Facts(target=alices))
    assert not d.allowed and d.rule == "owner-annotation"
    new["metadata"]["labels"][OWNER_LABEL] = "alice"
    new["data"] = {"b": "2"}
    assert run(policy, review(new, old=old, user="alice", groups=INTERN, operation="UPDATE").body(),
               Facts(target=alices)).allowed


def test_a_bare_pod_is_labelled_and_checked(policy: Policy) -> None:
    out = stamped(policy, make_pod(gpus=1).obj(), "bob", RESEARCHER)
    assert labels_at(out) == {OWNER_LABEL: "bob", TEAM_LABEL: "vision"}
    assert run(policy, review(out, user="bob", groups=RESEARCHER).body()).allowed


def cpu_pod(**metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "notebook", "namespace": "research", **metadata},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def test_an_object_without_gpus_may_not_name_someone_else_either(policy: Policy) -> None:
    """A CPU pod labelled as bob's (or team nlp's) would pass bob's name to whoever selects or reads
    by those labels: a NetworkPolicy, a dashboard, an incident responder."""
    for metadata, rule in (({"labels": {OWNER_LABEL: "bob"}}, "owner-annotation"),
                           ({"labels": {TEAM_LABEL: "nlp"}}, "team-annotation"),
                           ({"annotations": {OWNER_LABEL: "bob"}}, "owner-annotation"),
                           ({"annotations": {TEAM_LABEL: "nlp"}}, "team-annotation")):
        d = run(policy, review(cpu_pod(**metadata), user="alice", groups=INTERN).body())
        assert not d.allowed and d.rule == rule, (metadata, d)
    deployment = make_deployment(gpus=0).obj()
    deployment["spec"]["template"]["metadata"] = {"labels": {"app": "x", OWNER_LABEL: "bob"}}
    d = run(policy, review(deployment, user="alice", groups=INTERN).body())
    assert not d.allowed and "spec.template" in d.reason


def test_an_object_without_gpus_may_name_its_creator(policy: Policy) -> None:
    for metadata in ({}, {"labels": {OWNER_LABEL: "alice", TEAM_LABEL: "vision"}},
                     {"annotations": {OWNER_LABEL: "alice", TEAM_LABEL: "vision"}}):
        assert run(policy, review(cpu_pod(**metadata), user="alice", groups=INTERN).body()).allowed, metadata
    # A controller copies the labels its owner's template was stamped with onto the pods it makes.
    made = cpu_pod(labels={OWNER_LABEL: "bob", TEAM_LABEL: "vision"})
    assert run(policy, review(made, user="system:serviceaccount:kube-system:replicaset-controller",
                              groups=("system:serviceaccounts",)).body()).allowed


def test_an_update_of_an_object_without_gpus_may_not_start_naming_someone_else(policy: Policy) -> None:
    old = cpu_pod()
    for metadata in ({"labels": {OWNER_LABEL: "bob"}}, {"annotations": {OWNER_LABEL: "bob"}},
                     {"annotations": {TEAM_LABEL: "nlp"}}):
        d = run(policy, review(cpu_pod(**metadata), old=old, user="alice", groups=INTERN, operation="UPDATE").body())
        assert not d.allowed and d.rule in ("owner-annotation", "team-annotation"), (metadata, d)
    # What bob wrote on his own pod stays when a team-mate changes something else.
    bobs = cpu_pod(labels={OWNER_LABEL: "bob"}, annotations={OWNER_LABEL: "bob"})
    edited = cpu_pod(labels={OWNER_LABEL: "bob"}, annotations={OWNER_LABEL: "bob", "note": "restarted"})
    assert run(policy, review(edited, old=bobs, user="alice", groups=INTERN, operation="UPDATE").body()).allowed
