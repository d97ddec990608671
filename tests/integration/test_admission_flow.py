"""The whole validate/mutate path in-process, against a real SQLite store."""

from __future__ import annotations

import base64
import json
from typing import Any

from conftest import (
    ADMIN,
    INTERN,
    LEAD,
    RESEARCHER,
    delete_review,
    exec_review,
    make_deployment,
    make_job,
    make_pod,
    make_pytorchjob,
    review,
)

from gateway.service import AdmissionService


def answer(service: AdmissionService, body: dict[str, Any]) -> dict[str, Any]:
    out = service.validate(body)
    assert out["response"]["uid"] == body["request"]["uid"]
    return out["response"]


def patch_of(service: AdmissionService, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = service.mutate(body)["response"]
    assert out["allowed"] is True
    return json.loads(base64.b64decode(out["patch"])) if "patch" in out else []


def launch(service: AdmissionService, obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    return answer(service, review(obj, user=user, groups=groups).body())


def test_intern_8000_gpu_pytorchjob_is_denied_with_an_actionable_message(service):
    resp = launch(service, make_pytorchjob(workers=999, gpus=8).obj(), "alice", INTERN)
    assert resp["allowed"] is False
    assert resp["status"]["message"] == (
        "gpu-gateway: denied launch of PyTorchJob research/llm-70b: user alice (role intern) may "
        "launch at most 8 GPUs per workload; this one asks for 8000 (1000 pods x 8 nvidia.com/gpu). "
        "Ask for an exception (gpuctl request launch PyTorchJob research/llm-70b --gpus 8000 --reason ...): "
        "a lead in team vision (group gpu-leads) or an admin (group gpu-admins) may approve it."
    )


def test_researcher_256_gpu_job_is_admitted_and_reserved(service, store):
    resp = launch(service, make_job(gpus=8, parallelism=32).obj(), "bob", RESEARCHER)
    assert resp["allowed"] is True
    [row] = store.reservations()
    assert (row.owner, row.team, row.gpus, row.charged) == ("bob", "vision", 256, True)


def test_user_quota_counts_running_workloads(service):
    first = make_job(gpus=8).named("research", "a").obj()
    second = make_job(gpus=8).named("research", "b").obj()
    third = make_job(gpus=1).named("research", "c").obj()
    assert launch(service, first, "alice", INTERN)["allowed"]
    assert launch(service, second, "alice", INTERN)["allowed"]
    resp = launch(service, third, "alice", INTERN)
    assert not resp["allowed"]
    assert "may hold at most 16 GPUs at once; 16 are in use and this asks for 1 more" in resp["status"]["message"]


def test_deleting_a_workload_releases_its_gpus(service, store):
    job = make_job(gpus=8).named("research", "a").obj()
    assert launch(service, job, "alice", INTERN)["allowed"]
    assert answer(service, delete_review(job, user="alice", groups=INTERN).body())["allowed"]
    assert store.reservations() == []


def test_intern_cannot_kill_researchers_job(service, store):
    job = make_job(gpus=8, parallelism=32).named("research", "big").obj()
    assert launch(service, job, "bob", RESEARCHER)["allowed"]
    resp = answer(service, delete_review(job, user="carol", groups=("gpu-interns", "team:nlp")).body())
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert "may kill only their own workloads; Job research/big belongs to bob (team vision)" in message
    assert len(store.reservations()) == 1


def test_intern_cannot_exec_into_researchers_pod(service):
    pod = make_pod(gpus=8).named("research", "bob-pod").obj()
    assert launch(service, pod, "bob", RESEARCHER)["allowed"]
    for sub in ("exec", "attach", "portforward"):
        resp = answer(service, exec_review("research", "bob-pod", user="carol", groups=INTERN, sub=sub).body())
        assert resp["allowed"] is False, sub
        assert "may exec only their own workloads" in resp["status"]["message"]
    assert answer(service, exec_review("research", "bob-pod", user="bob", groups=RESEARCHER).body())["allowed"]


def test_lead_may_stop_a_team_members_job_but_not_another_teams(service):
    job = make_job(gpus=8).named("research", "j").obj()
    assert launch(service, job, "bob", RESEARCHER)["allowed"]
    other_lead = answer(service, delete_review(job, user="dana", groups=("gpu-leads", "team:nlp")).body())
    assert other_lead["allowed"] is False
    assert answer(service, delete_review(job, user="lena", groups=LEAD).body())["allowed"] is True


def test_eviction_of_someone_elses_pod_is_a_kill(service):
    pod = make_pod(gpus=8).named("research", "p1").obj()
    assert launch(service, pod, "bob", RESEARCHER)["allowed"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p1", "namespace": "research"}}
    body = review(eviction, user="alice", groups=INTERN, sub_resource="eviction",
                  kind=("policy", "v1", "Eviction"), resource=("", "pods"), name="p1").body()
    resp = answer(service, body)
    assert resp["allowed"] is False and "denied kill of Pod research/p1" in resp["status"]["message"]


def test_scale_up_past_the_limit_is_denied_and_scale_down_is_allowed(service, store):
    dep = make_deployment(gpus=8, replicas=4).named("research", "serve").obj()
    assert launch(service, dep, "bob", RESEARCHER)["allowed"]

    def scale(old: int, new: int) -> dict[str, Any]:
        def s(n: int) -> dict[str, Any]:
            return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "serve", "namespace": "research"}, "spec": {"replicas": n}}
        return review(s(new), old=s(old), user="bob", groups=RESEARCHER, operation="UPDATE",
                      sub_resource="scale", kind=("autoscaling", "v1", "Scale"),
                      resource=("apps", "deployments")).body()

    resp = answer(service, scale(4, 64))
    # 64 replicas and 16 more pods of a rolling update's surge (maxSurge 25%)
    assert not resp["allowed"] and ("at most 256 GPUs per workload; this scale asks for 640 (64 replicas, with "
                                    "the surge of a rolling update)") in resp["status"]["message"]
    assert answer(service, scale(4, 2))["allowed"]
    assert store.reservations()[0].gpus == 24


def test_status_updates_are_not_modifications(service):
    job = make_job(gpus=8).named("research", "j").obj()
    assert launch(service, job, "bob", RESEARCHER)["allowed"]
    body = review(job, old=job, user="system:serviceaccount:kube-system:job-controller", groups=(),
                  operation="UPDATE", sub_resource="status").body()
    assert answer(service, body)["allowed"]


def test_non_gpu_objects_pass_untouched_and_unaudited(service, store):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c", "namespace": "research"},
           "spec": {"ports": [{"port": 80}]}}
    body = review(svc, user="nobody", groups=()).body()
    assert answer(service, body)["allowed"]
    assert patch_of(service, body) == []
    pod = make_pod(gpus=0).named("research", "cpu").obj()
    assert answer(service, review(pod, user="nobody", groups=()).body())["allowed"]
    assert list(store.audit_rows()) == []


def test_anyone_without_a_role_may_not_launch_gpus(service):
    resp = launch(service, make_pod(gpus=1).obj(), "mallory", ())
    assert not resp["allowed"] and resp["status"]["message"].startswith(
        "gpu-gateway: denied launch of Pod research/p: user mallory (role none) may not launch GPU workloads")


def test_mutate_stamps_owner_on_workload_and_every_template_overwriting_a_spoof(service):
    job = make_pytorchjob(workers=1, gpus=1).owned_by("bob").obj()
    ops = patch_of(service, review(job, user="alice", groups=INTERN).body())
    paths = {op["path"]: op["value"] for op in ops}
    assert paths["/metadata/annotations/gpu-gateway.io~1owner"] == "alice"
    stamp = {"gpu-gateway.io/owner": "alice", "gpu-gateway.io/team": "vision"}
    assert paths["/spec/pytorchReplicaSpecs/Master/template/metadata"] == {"annotations": stamp, "labels": stamp}
    assert "/spec/pytorchReplicaSpecs/Worker/template/metadata" in paths


def test_validate_denies_a_create_whose_owner_is_not_the_requester(service):
    job = make_job(gpus=1).owned_by("bob").obj()
    resp = launch(service, job, "alice", INTERN)
    assert not resp["allowed"] and resp["status"]["message"].startswith(
        "gpu-gateway: denied launch of Job research/train: the object names bob as owner")


def test_only_admins_may_change_the_owner_on_update(service):
    job = make_job(gpus=1).named("research", "j").owned_by("alice", "vision").obj()
    assert launch(service, job, "alice", INTERN)["allowed"]
    changed = make_job(gpus=1).named("research", "j").owned_by("carol", "vision").obj()
    upd = review(changed, old=job, user="alice", groups=INTERN, operation="UPDATE").body()
    assert not answer(service, upd)["allowed"]
    upd = review(changed, old=job, user="root", groups=ADMIN, operation="UPDATE").body()
    assert answer(service, upd)["allowed"]


def test_team_annotation_must_be_one_of_the_requesters_teams(service):
    job = make_job(gpus=1).annotated(**{"gpu-gateway.io/team": "nlp"}).obj()
    resp = launch(service, job, "alice", INTERN)
    assert not resp["allowed"] and "is not in team nlp (their teams: vision)" in resp["status"]["message"]
    job = make_job(gpus=1).annotated(**{"gpu-gateway.io/team": "nlp"}).obj()
    assert launch(service, job, "alice", ("gpu-interns", "team:vision", "team:nlp"))["allowed"]


def test_pods_from_controllers_belong_to_the_parents_owner_and_are_not_charged_again(service, store):
    job = make_job(gpus=8, parallelism=2).named("research", "j").obj()
    job["metadata"]["uid"] = "job-uid"
    assert launch(service, job, "bob", RESEARCHER)["allowed"]
    pod = make_pod(gpus=8).named("research", "j-abcde").owned_by("mallory", "vision").obj()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "job-uid",
                                           "controller": True}]
    controller = "system:serviceaccount:kube-system:job-controller"
    body = review(pod, user=controller, groups=("system:serviceaccounts",)).body()
    assert answer(service, body)["allowed"]
    rows = {r.name: r for r in store.reservations()}
    assert rows["j-abcde"].owner == "bob" and rows["j-abcde"].charged is False
    # still 16 charged: the pod is not counted twice
    assert sum(r.gpus for r in store.reservations() if r.charged) == 16
    # and the pod's owner is known for exec
    resp = answer(service, exec_review("research", "j-abcde", user="alice", groups=INTERN).body())
    assert not resp["allowed"]


def test_pods_a_person_creates_are_theirs_whatever_owner_references_say(service, store):
    pod = make_pod(gpus=2).named("research", "sneaky").obj()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "bobs", "uid": "x"}]
    pod["metadata"]["labels"] = {"owner": "bob"}
    assert launch(service, pod, "alice", INTERN)["allowed"]
    assert store.reservations()[0].owner == "alice"


def test_dry_run_is_decided_and_audited_but_reserves_nothing(service, store):
    body = review(make_job(gpus=8).obj(), user="alice", groups=INTERN, dry_run=True).body()
    assert answer(service, body)["allowed"]
    assert store.reservations() == []
    [row] = store.audit_rows()
    assert row["dry_run"] is True and row["decision"] == "allowed"


def test_warn_mode_allows_with_a_kubectl_warning(service, policy_dir):
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace("workload-gpu-limit: enforce", "workload-gpu-limit: warn"))
    service.policies.reload(force=True)
    resp = launch(service, make_job(gpus=8, parallelism=2).obj(), "alice", INTERN)
    assert resp["allowed"] is True
    assert any("would be denied by rule workload-gpu-limit" in w for w in resp["warnings"])
    [row] = service.store.audit_rows()
    assert (row["mode"], row["rule"]) == ("warn", "workload-gpu-limit")


def test_dry_run_mode_allows_silently_and_audits_what_would_have_been_denied(service, policy_dir):
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace("workload-gpu-limit: enforce", "workload-gpu-limit: dry-run"))
    service.policies.reload(force=True)
    resp = launch(service, make_job(gpus=8, parallelism=2).obj(), "alice", INTERN)
    assert resp["allowed"] is True and "warnings" not in resp
    [row] = service.store.audit_rows()
    assert row["mode"] == "dry-run" and row["reason"].startswith("would deny (workload-gpu-limit")


def test_every_governed_decision_is_audited_with_who_what_and_why(service, store):
    launch(service, make_pytorchjob().obj(), "alice", INTERN)
    [row] = store.audit_rows()
    assert row["user"] == "alice" and row["groups"] == ["gpu-interns", "team:vision", "system:authenticated"]
    assert (row["role"], row["action"], row["kind"], row["namespace"], row["name"]) == (
        "intern", "launch", "PyTorchJob", "research", "llm-70b")
    assert (row["gpus"], row["decision"], row["rule"]) == (8000, "denied", "workload-gpu-limit")
    assert store.verify().ok


def test_exempt_namespaces_are_not_decided(service):
    pod = make_pod(gpus=64).named("kube-system", "x").obj()
    assert launch(service, pod, "mallory", ())["allowed"]


def test_update_of_an_object_being_deleted_is_still_decided(service):
    job = make_job(gpus=8).named("research", "j").obj()
    assert launch(service, job, "bob", RESEARCHER)["allowed"]
    dying = make_job(gpus=8).named("research", "j").obj()
    dying["metadata"]["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    dying["metadata"]["finalizers"] = []
    body = review(dying, old=job, user="alice", groups=INTERN, operation="UPDATE").body()
    assert not answer(service, body)["allowed"]


def test_fractional_gpus_are_refused_not_rounded(service):
    resp = launch(service, make_pod(gpus="500m").obj(), "bob", RESEARCHER)
    assert not resp["allowed"] and "fractional GPU count" in resp["status"]["message"]


def test_a_review_without_uid_is_an_http_error_and_a_broken_object_a_deny(service):
    import pytest

    from gateway.errors import ReviewError

    with pytest.raises(ReviewError):
        service.validate({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}})
    body = review(make_pod(gpus=1).obj(), user="bob", groups=RESEARCHER).body()
    body["request"]["object"]["spec"]["containers"] = "not-a-list"
    resp = answer(service, body)
    assert resp["allowed"] is False and "cannot read the object" in resp["status"]["message"]


def test_a_broken_store_fails_closed(service, store):
    store.close()
    resp = answer(service, review(make_pod(gpus=1).obj(), user="bob", groups=RESEARCHER).body())
    assert resp["allowed"] is False and resp["status"]["code"] == 500
