"""Insider attacks on who owns what, as labels and as the admin API shows it: each test is one way
an intern (`gpu-interns`, `team:vision`) tries to make the cluster name someone else as the owner of
what they make, or to learn through the admin API what the audit would not show them. Driven
through a real gateway on loopback (its /mutate and /validate as the API server calls them, and
the admin API with the people's own tokens)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from conftest import INTERN, container, make_job, make_pod, review
from served import Served, bearer, start_api_server, stop_server

NLP = ("gpu-researchers", "team:nlp")
OWNER, TEAM = "gpu-gateway.io/owner", "gpu-gateway.io/team"
ALICE = bearer("alice", list(INTERN))
STATEFULSET_CONTROLLER = "system:serviceaccount:kube-system:statefulset-controller"
CRONJOB_CONTROLLER = "system:serviceaccount:kube-system:cronjob-controller"


def _admit(c: Any, obj: dict[str, Any], user: str, groups: tuple[str, ...],
           **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the API server does with a request: /mutate, its patch applied, then /validate."""
    answer = c.post("/mutate", json=review(obj, user=user, groups=groups, **kw).body()).json()["response"]
    if "patch" in answer:
        obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    verdict = c.post("/validate", json=review(obj, user=user, groups=groups, **kw).body()).json()["response"]
    return obj, verdict


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """nina (researcher, team nlp) runs an 8-GPU Job in `lab-b`."""
    served = start_api_server(tmp_path_factory.mktemp("owner-view"))
    with served.client() as c:
        _, verdict = _admit(c, make_job(gpus=8).named("lab-b", "secret-run").obj(), "nina", NLP)
        assert verdict["allowed"], verdict
    yield served
    stop_server(served)


def _claim_template(meta: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": meta, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


# ------------------------------------------------------- names in what controllers make


def test_a_cpu_statefulset_may_not_make_claims_owned_by_someone_else(server: Served) -> None:
    """The claims a StatefulSet controller creates carry the owner its volumeClaimTemplates name, and
    the ledger records the claim as theirs: without GPUs, alice's template may not name nina."""
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "research"},
           "spec": {"selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container(0)]}},
                    "volumeClaimTemplates": [_claim_template({"name": "data", "annotations": {OWNER: "nina"}})]}}
    with server.client() as c:
        _, verdict = _admit(c, sts, "alice", INTERN)
        assert not verdict["allowed"], verdict
        assert "names nina as owner" in verdict["status"]["message"]
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "data-db-0", "namespace": "research", "annotations": {OWNER: "nina"}},
                 "spec": _claim_template({})["spec"]}
        # what the controller would have created had the StatefulSet been admitted
        _, made = _admit(c, claim, STATEFULSET_CONTROLLER, ("system:serviceaccounts",))
        assert made["allowed"]


@pytest.mark.parametrize("meta", [{"annotations": {TEAM: "nlp"}}, {"labels": {OWNER: "nina"}},
                                  {"labels": {TEAM: "nlp"}}])
def test_a_cpu_pods_ephemeral_claim_template_may_not_name_another_owner_or_team(server: Served,
                                                                              meta: dict[str, Any]) -> None:
    pod = make_pod(0).named("research", "scratch").obj()
    pod["spec"]["volumes"] = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": _claim_template(meta)}}]
    with server.client() as c:
        _, verdict = _admit(c, pod, "alice", INTERN)
    assert not verdict["allowed"], verdict
    assert "spec.volumes.0.ephemeral.volumeClaimTemplate" in verdict["status"]["message"] or \
        "team nlp" in verdict["status"]["message"]


def test_a_cpu_cronjobs_job_template_may_not_name_another_owner(server: Served) -> None:
    """A CronJob's Jobs carry its jobTemplate's metadata, copied by the cronjob controller."""
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {
                "metadata": {"labels": {OWNER: "nina", TEAM: "nlp"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container(0)]}}}}}}
    with server.client() as c:
        _, verdict = _admit(c, cron, "alice", INTERN)
        assert not verdict["allowed"], verdict
        assert f"the label {OWNER} on spec.jobTemplate must be 'alice'" in verdict["status"]["message"]
        # her own labels, as the gateway would stamp them, are fine
        cron["spec"]["jobTemplate"]["metadata"]["labels"] = {OWNER: "alice", TEAM: "vision"}
        _, verdict = _admit(c, cron, "alice", INTERN)
        assert verdict["allowed"], verdict


def test_a_cpu_deployments_pod_template_may_not_name_another_team(server: Served) -> None:
    """The team annotation of a pod template, not only of the object, must be one of the requester's."""
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "research"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}, "annotations": {TEAM: "nlp"}},
                                 "spec": {"containers": [container(0)]}}}}
    with server.client() as c:
        _, verdict = _admit(c, dep, "alice", INTERN)
    assert not verdict["allowed"], verdict
    assert "is not in team nlp" in verdict["status"]["message"]


def test_an_update_of_a_gpu_cronjob_admitted_before_labels_may_not_label_its_jobs_for_someone_else(
        server: Served) -> None:
    """A CronJob admitted before labels were stamped gets its annotations stamped again on an
    UPDATE, not labels: the labels its jobTemplate sets are still checked."""
    cron = {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "legacy", "namespace": "research", "uid": "uid-legacy",
                         "annotations": {OWNER: "alice", TEAM: "vision"}},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {
                "metadata": {"annotations": {OWNER: "alice", TEAM: "vision"}},
                "spec": {"template": {"metadata": {"annotations": {OWNER: "alice", TEAM: "vision"}},
                                      "spec": {"restartPolicy": "Never", "containers": [container(1)]}}}}}}
    with server.client() as c:
        created, verdict = _admit(c, cron, "alice", INTERN)
        assert verdict["allowed"], verdict
        # as it was before labels: strip the labels the gateway stamped now
        for node in (created, created["spec"]["jobTemplate"], created["spec"]["jobTemplate"]["spec"]["template"]):
            node["metadata"].pop("labels", None)
        changed = json.loads(json.dumps(created))
        changed["spec"]["jobTemplate"]["metadata"]["labels"] = {OWNER: "nina"}
        _, verdict = _admit(c, changed, "alice", INTERN, operation="UPDATE", old=created)
    assert not verdict["allowed"], verdict
    assert "spec.jobTemplate" in verdict["status"]["message"]


# ------------------------------------------------------- what /api/v1/check tells


def test_check_as_oneself_in_groups_one_is_not_in_is_refused(server: Served) -> None:
    """alice may not check in team nlp's groups: the result would show team nlp's GPUs in use."""
    job = make_job(gpus=1).named("research", "probe").obj()
    job["metadata"]["annotations"] = {TEAM: "nlp"}
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, json={"user": "alice", "groups": [*NLP], "manifest": job})
        admin = c.post("/api/v1/check", headers=ALICE, json={"user": "alice", "groups": ["gpu-admins"],
                                                             "manifest": job})
        own = c.post("/api/v1/check", headers=ALICE, json={"user": "alice", "groups": ["gpu-interns"],
                                                           "manifest": job})
    assert got.status_code == 403, got.text
    assert "team:nlp" in got.json()["reason"]
    assert admin.status_code == 403, admin.text
    assert own.status_code == 200, own.text  # some of one's own groups


@pytest.mark.parametrize("action", ["launch", "modify", "kill"])
def test_check_does_not_tell_who_owns_a_workload_the_caller_may_not_see(server: Served, action: str) -> None:
    """Describe says the ledger holds no lab-b/secret-run that alice may see; a check of the same
    name must not name nina, her team or their figures either. The verdict stays true."""
    probe = make_job(gpus=1).named("lab-b", "secret-run").obj()
    body = {"user": "alice", "groups": list(INTERN), "manifest": probe, "action": action}
    with server.client() as c:
        described = c.get("/api/v1/workloads/jobs/lab-b/secret-run", headers=ALICE)
        got = c.post("/api/v1/check", headers=ALICE, json=body)
        nina = c.post("/api/v1/check", headers=bearer("nina", list(NLP)), json={**body, "user": "nina",
                                                                                 "groups": list(NLP)})
    assert described.status_code == 404
    assert got.status_code == 200, got.text
    result = got.json()["results"][0]
    assert result["allowed"] is False
    assert "nina" not in json.dumps(result) and "nlp" not in json.dumps(result)
    assert result["charged_to"] is None and result["caps"] == [] and result["gpus"] != 8  # not nina's 8
    assert "may not read" in result["reason"]
    mine = nina.json()["results"][0]  # the owner is told everything
    assert "may not read" not in mine["reason"]


def test_an_administrator_checking_as_someone_else_is_told_everything(server: Served) -> None:
    probe = make_job(gpus=1).named("lab-b", "secret-run").obj()
    with server.client() as c:
        got = c.post("/api/v1/check", headers=bearer("root", ["gpu-admins"]),
                     json={"user": "alice", "groups": list(INTERN), "manifest": probe, "action": "kill"})
    result = got.json()["results"][0]
    assert result["allowed"] is False and "belongs to nina (team nlp)" in result["reason"]
