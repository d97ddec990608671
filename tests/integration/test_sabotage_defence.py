"""Owned data and config, mount rules and escape hatches, through the real service and store."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import ADMIN, container, make_deployment, make_job, make_pod, make_pytorchjob, review

from gateway.service import AdmissionService

EVE = ("gpu-interns", "team:pretrain")          # intern in bob's team
BOB = ("gpu-researchers", "team:pretrain")
RITA = ("gpu-researchers", "team:pretrain")     # researcher, bob's teammate
LENA = ("gpu-leads", "team:pretrain")
OTTO = ("gpu-researchers", "team:vision")       # another team
NOBODY: tuple[str, ...] = ()


def answer(service: AdmissionService, body: dict[str, Any]) -> dict[str, Any]:
    return service.validate(body)["response"]


def create(service: AdmissionService, obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """CREATE as the API server would: mutate, apply the patch, then validate."""
    body = review(obj, user=user, groups=groups).body()
    out = service.mutate(body)["response"]
    if "patch" in out:
        import jsonpatch

        body["request"]["object"] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(out["patch"])))
    return answer(service, body)


def pvc(name: str, *, shareable: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "research"}
    if shareable:
        meta["annotations"] = {"gpu-gateway.io/shareable": "true"}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Ti"}}}}


def secret(name: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "research", "annotations": dict(annotations)},
            "data": {"token": base64.b64encode(b"hf_supersecret").decode()}}


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "research"},
            "data": {"train.yaml": "lr: 3e-4\n"}}


def mounting(claim: str, *, read_only: bool = False, gpus: int = 0, name: str = "probe") -> dict[str, Any]:
    pod = make_pod(gpus=gpus).named("research", name).obj()
    pod["spec"]["volumes"] = [{"name": "ckpt", "persistentVolumeClaim": {"claimName": claim}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "ckpt", "mountPath": "/ckpt", "readOnly": read_only}]
    return pod


@pytest.fixture
def bobs_data(service: AdmissionService) -> None:
    assert create(service, pvc("llm-70b-ckpt"), "bob", BOB)["allowed"]
    assert create(service, secret("bob-hf-token"), "bob", BOB)["allowed"]
    assert create(service, configmap("bob-train-config"), "bob", BOB)["allowed"]


# ----------------------------------------------------------------- owned data and config

def test_data_objects_are_stamped_with_their_creator(service: AdmissionService, store: Any) -> None:
    body = review(configmap("cfg"), user="bob", groups=BOB).body()
    ops = json.loads(base64.b64decode(service.mutate(body)["response"]["patch"]))
    stamp = {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "pretrain"}
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": stamp},
                   {"op": "add", "path": "/metadata/labels", "value": stamp}]
    assert create(service, secret("s", **{"gpu-gateway.io/owner": "alice"}), "bob", BOB)["allowed"]
    owners = {r.name: r.owner for r in store.reservations()}
    assert owners == {"s": "bob"}


def test_a_spoofed_owner_on_a_secret_is_denied_without_the_mutating_webhook(service: AdmissionService) -> None:
    resp = answer(service, review(secret("s", **{"gpu-gateway.io/owner": "bob"}), user="eve", groups=EVE).body())
    assert not resp["allowed"] and "names bob as owner, but eve is creating it" in resp["status"]["message"]


@pytest.mark.usefixtures("bobs_data")
@pytest.mark.parametrize(("user", "groups", "allowed"), [
    ("bob", BOB, True), ("eve", EVE, False), ("rita", RITA, False), ("lena", LENA, True),
    ("otto", OTTO, False), ("root", ADMIN, True),
])
def test_changing_and_deleting_data_follows_ownership(service: AdmissionService, user: str,
                                                      groups: tuple[str, ...], allowed: bool) -> None:
    old = configmap("bob-train-config")
    old["metadata"]["annotations"] = {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "pretrain"}
    new = json.loads(json.dumps(old))
    new["data"]["train.yaml"] = "lr: 1.0\n"  # the sabotage
    update = review(new, old=old, user=user, groups=groups, operation="UPDATE").body()
    assert answer(service, update)["allowed"] is allowed
    delete = review(None, old=old, user=user, groups=groups, operation="DELETE").body()
    assert answer(service, delete)["allowed"] is allowed


def test_objects_from_before_the_gateway_may_be_changed_by_researchers_not_interns(service: AdmissionService) -> None:
    old = configmap("legacy")
    new = configmap("legacy")
    new["data"] = {"x": "y"}
    resp = answer(service, review(new, old=old, user="eve", groups=EVE, operation="UPDATE").body())
    assert not resp["allowed"] and "which has no recorded owner" in resp["status"]["message"]
    assert answer(service, review(new, old=old, user="bob", groups=BOB, operation="UPDATE").body())["allowed"]
    rows = [r for r in service.store.audit_rows() if r["name"] == "legacy"]
    assert [r["decision"] for r in rows] == ["denied", "allowed"]


# ----------------------------------------------------------------- mount rules

@pytest.mark.usefixtures("bobs_data")
def test_an_intern_may_not_mount_a_teammates_checkpoint_read_write(service: AdmissionService) -> None:
    resp = create(service, mounting("llm-70b-ckpt"), "eve", EVE)
    assert resp["status"]["message"] == (
        "gpu-gateway: denied launch of Pod research/probe: user eve (role intern) may not mount "
        "PersistentVolumeClaim research/llm-70b-ckpt read-write; it belongs to bob (team pretrain). "
        "Mount it readOnly or ask bob.")


@pytest.mark.usefixtures("bobs_data")
def test_read_only_mounts_of_team_data_are_allowed_but_not_of_another_teams(service: AdmissionService) -> None:
    assert create(service, mounting("llm-70b-ckpt", read_only=True), "eve", EVE)["allowed"]
    resp = create(service, mounting("llm-70b-ckpt", read_only=True, name="p2"), "otto", OTTO)
    assert not resp["allowed"] and "may not mount PersistentVolumeClaim research/llm-70b-ckpt read-only" in \
        resp["status"]["message"]


def test_researchers_may_write_team_claims_only_when_shared(service: AdmissionService) -> None:
    assert create(service, pvc("private"), "bob", BOB)["allowed"]
    assert create(service, pvc("shared", shareable=True), "bob", BOB)["allowed"]
    assert not create(service, mounting("private"), "rita", RITA)["allowed"]
    assert create(service, mounting("shared", name="p2"), "rita", RITA)["allowed"]
    assert not create(service, mounting("shared", name="p3"), "eve", EVE)["allowed"]   # interns: own only
    assert create(service, mounting("private", name="p4"), "lena", LENA)["allowed"]    # leads: their team's


@pytest.mark.usefixtures("bobs_data")
def test_a_pytorchjob_whose_workers_mount_someone_elses_checkpoint(service: AdmissionService) -> None:
    job = make_pytorchjob(workers=3, gpus=2).obj()
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    worker["volumes"] = [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "llm-70b-ckpt"}}]
    worker["containers"][0]["volumeMounts"] = [{"name": "ckpt", "mountPath": "/ckpt"}]
    resp = create(service, job, "otto", OTTO)
    assert not resp["allowed"] and "it belongs to bob (team pretrain)" in resp["status"]["message"]
    assert create(service, json.loads(json.dumps(job)), "bob", BOB)["allowed"]


@pytest.mark.usefixtures("bobs_data")
def test_a_job_reading_a_teammates_secret_through_envfrom(service: AdmissionService) -> None:
    def job(user_name: str) -> dict[str, Any]:
        obj = make_job(gpus=1).named("research", f"j-{user_name}").obj()
        obj["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "bob-hf-token"}}]
        return obj

    resp = create(service, job("eve"), "eve", EVE)
    assert resp["status"]["message"] == (
        "gpu-gateway: denied launch of Job research/j-eve: user eve (role intern) may not read Secret "
        "research/bob-hf-token (envFrom of container main); it belongs to bob (team pretrain). Ask bob.")
    assert not create(service, job("rita"), "rita", RITA)["allowed"]
    assert create(service, job("lena"), "lena", LENA)["allowed"]
    assert create(service, job("bob"), "bob", BOB)["allowed"]


@pytest.mark.usefixtures("bobs_data")
def test_a_deployment_with_a_configmap_volume(service: AdmissionService) -> None:
    def dep(name: str) -> dict[str, Any]:
        obj = make_deployment(gpus=0).named("research", name).obj()
        obj["spec"]["template"]["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "bob-train-config"}}]
        return obj

    assert create(service, dep("ok"), "eve", EVE)["allowed"]          # team config is readable
    resp = create(service, dep("no"), "otto", OTTO)
    assert not resp["allowed"] and "may not read ConfigMap research/bob-train-config (volume c)" in \
        resp["status"]["message"]


def test_a_pod_with_an_ephemeral_volume_claim_template_owns_its_claim(service: AdmissionService,
                                                                      store: Any) -> None:
    pod = make_pod(gpus=1).named("research", "scratch").obj()
    pod["spec"]["volumes"] = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Ti"}}}}}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    body = review(pod, user="bob", groups=BOB).body()
    ops = json.loads(base64.b64decode(service.mutate(body)["response"]["patch"]))
    stamped = {op["path"]: op["value"] for op in ops}
    claim_meta = stamped["/spec/volumes/0/ephemeral/volumeClaimTemplate/metadata"]
    assert claim_meta["annotations"]["gpu-gateway.io/owner"] == "bob"
    # the ephemeral volume controller creates the claim with the template's annotations
    claim = pvc("scratch-scratch")
    claim["metadata"]["annotations"] = {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "pretrain"}
    ctrl = "system:serviceaccount:kube-system:ephemeral-volume-controller"
    assert answer(service, review(claim, user=ctrl, groups=()).body())["allowed"]
    assert {r.name: r.owner for r in store.reservations()}["scratch-scratch"] == "bob"
    assert not create(service, mounting("scratch-scratch", name="thief"), "eve", EVE)["allowed"]


def test_unowned_claims_may_be_read_by_anyone_but_written_only_by_trusted_roles(service: AdmissionService) -> None:
    assert create(service, mounting("old-data", read_only=True), "eve", EVE)["allowed"]
    resp = create(service, mounting("old-data", name="p2"), "eve", EVE)
    assert not resp["allowed"] and "it has no recorded owner" in resp["status"]["message"]
    assert create(service, mounting("old-data", name="p3"), "bob", BOB)["allowed"]


def test_cluster_published_config_is_always_readable(service: AdmissionService) -> None:
    pod = make_pod(gpus=1).named("research", "p").obj()
    pod["spec"]["volumes"] = [{"name": "kube-api-access", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}}]
    assert create(service, pod, "eve", EVE)["allowed"]


# ----------------------------------------------------------------- escape hatches

HATCHED = {
    "hostPath": {"volumes": [{"name": "h", "hostPath": {"path": "/var/lib/kubelet"}}]},
    "privileged": {"containers": [container(1) | {"securityContext": {"privileged": True}}]},
    "capabilities": {"containers": [container(1) | {"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}]},
    "hostPID": {"hostPID": True},
    "hostIPC": {"hostIPC": True},
    "hostNetwork": {"hostNetwork": True},
    "nodeName": {"nodeName": "gpu-node-17"},
    "schedulerName": {"schedulerName": "my-scheduler"},
}


@pytest.mark.parametrize("hatch", sorted(HATCHED))
def test_gpu_pods_of_non_admins_may_not_use_escape_hatches(service: AdmissionService, hatch: str) -> None:
    pod = make_pod(gpus=1).named("research", f"p-{hatch.lower()}").obj()
    pod["spec"].update(HATCHED[hatch])
    resp = create(service, pod, "lena", LENA)
    assert not resp["allowed"], hatch
    assert f"user lena (role lead) may not use {hatch} in pods" in resp["status"]["message"]
    admin_pod = json.loads(json.dumps(pod))
    admin_pod["metadata"]["name"] += "-admin"
    assert create(service, admin_pod, "root", ADMIN)["allowed"]


def test_cpu_pods_are_subject_to_escape_hatch_rules_too(service: AdmissionService) -> None:
    pod = make_pod(gpus=0).named("research", "debug").obj()
    pod["spec"]["hostNetwork"] = True
    resp = create(service, pod, "eve", EVE)
    assert not resp["allowed"] and "may not use hostNetwork in pods" in resp["status"]["message"]
    pod["metadata"]["name"] = "plain"
    del pod["spec"]["hostNetwork"]
    assert create(service, pod, "eve", EVE)["allowed"]


def test_a_role_can_be_allowed_an_escape_hatch(service: AdmissionService, policy_dir: Any) -> None:
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace(
        "  lead:\n    max_gpus_per_workload: 4096",
        "  lead:\n    max_gpus_per_workload: 4096\n    escape_hatches: [hostNetwork]"))
    service.policies.reload(force=True)
    pod = make_pod(gpus=1).named("research", "net").obj()
    pod["spec"]["hostNetwork"] = True
    assert create(service, pod, "lena", LENA)["allowed"]
    pod = make_pod(gpus=1).named("research", "pid").obj()
    pod["spec"]["hostPID"] = True
    assert not create(service, pod, "lena", LENA)["allowed"]


def test_the_chain_verifies_after_all_of_it(service: AdmissionService, bobs_data: None) -> None:
    create(service, mounting("llm-70b-ckpt"), "eve", EVE)
    assert service.store.verify().ok
