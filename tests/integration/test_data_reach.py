"""Data reach and escape hatches through the real service: clones and snapshots of claims,
image pull Secrets, ServiceAccounts, name squatting, and escape hatches of every pod.

Objects are shaped as `kubectl create ... --dry-run=client -o json` writes them, and go
through mutate → patch → validate with UIDs assigned (tests/cluster_sim.py)."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_sim import REPLICASET_CONTROLLER, SYSTEM, Cluster
from conftest import ADMIN, container, make_job, make_pod

from gateway.service import AdmissionService

EVE = ("gpu-interns", "team:pretrain")          # intern in bob's team
BOB = ("gpu-researchers", "team:pretrain")
RITA = ("gpu-researchers", "team:pretrain")     # researcher, bob's teammate
LENA = ("gpu-leads", "team:pretrain")           # bob's lead
VIC = ("gpu-interns", "team:vision")            # intern of another team
OTTO = ("gpu-researchers", "team:vision")


@pytest.fixture
def cluster(service: AdmissionService) -> Cluster:
    return Cluster(service)


def pvc(name: str, *, source: dict[str, str] | None = None, ref: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Ti"}}}
    if source is not None:
        spec["dataSourceRef" if ref else "dataSource"] = source
    return {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": {"name": name, "namespace": "research"},
            "spec": spec}


def claim_source(name: str) -> dict[str, str]:
    return {"kind": "PersistentVolumeClaim", "name": name}


def snapshot_source(name: str) -> dict[str, str]:
    return {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name}


def snapshot(name: str, claim: str) -> dict[str, Any]:
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "research"},
            "spec": {"volumeSnapshotClassName": "csi-snap", "source": {"persistentVolumeClaimName": claim}}}


def configmap(name: str) -> dict[str, Any]:
    # kubectl create configmap NAME --from-literal=train.yaml=... --dry-run=client -o json
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name, "namespace": "research"},
            "data": {"train.yaml": "lr: 3e-4\n"}}


def regcred(name: str) -> dict[str, Any]:
    # kubectl create secret docker-registry NAME --docker-server=ghcr.io ... --dry-run=client -o json
    return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": "research"},
            "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}, "type": "kubernetes.io/dockerconfigjson"}


def service_account(name: str) -> dict[str, Any]:
    # kubectl create serviceaccount NAME --dry-run=client -o json
    return {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": name, "namespace": "research"}}


def cpu_pod(name: str, **spec: Any) -> dict[str, Any]:
    pod = make_pod(gpus=0).named("research", name).obj()
    pod["spec"].update(spec)
    return pod


def debug_node_pod(node: str = "gpu-node-17") -> dict[str, Any]:
    """What `kubectl debug node/gpu-node-17 -it --image=busybox` creates."""
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": f"node-debugger-{node}-x7k2p", "namespace": "research"},
            "spec": {"volumes": [{"name": "host-root", "hostPath": {"path": "/", "type": ""}}],
                     "containers": [{"name": "debugger", "image": "busybox", "stdin": True, "tty": True,
                                     "volumeMounts": [{"name": "host-root", "mountPath": "/host"}],
                                     "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}],
                     "restartPolicy": "Never", "nodeName": node, "hostNetwork": True, "hostPID": True,
                     "hostIPC": True, "tolerations": [{"operator": "Exists"}]}}


@pytest.fixture
def bobs_checkpoint(cluster: Cluster) -> None:
    assert cluster.create(pvc("llm-70b-ckpt"), "bob", BOB).allowed


# ----------------------------------------------------------------- cloning claims

@pytest.mark.usefixtures("bobs_checkpoint")
@pytest.mark.parametrize(("user", "groups", "allowed"), [
    ("vic", VIC, False), ("otto", OTTO, False), ("bob", BOB, True), ("lena", LENA, True),
    ("eve", EVE, True), ("root", ADMIN, True),   # a read: an intern of the team may read team claims
])
def test_cloning_a_claim_is_a_read_of_it(cluster: Cluster, user: str, groups: tuple[str, ...],
                                         allowed: bool) -> None:
    answer = cluster.create(pvc(f"copy-{user}", source=claim_source("llm-70b-ckpt")), user, groups)
    assert answer.allowed is allowed, answer.message
    if not allowed:
        assert ("may not clone PersistentVolumeClaim research/llm-70b-ckpt (spec dataSource); it belongs to "
                "bob (team pretrain)") in answer.message


@pytest.mark.usefixtures("bobs_checkpoint")
def test_data_source_ref_is_read_as_data_source(cluster: Cluster) -> None:
    answer = cluster.create(pvc("copy", source=claim_source("llm-70b-ckpt"), ref=True), "vic", VIC)
    assert not answer.allowed and "(spec dataSourceRef)" in answer.message


@pytest.mark.usefixtures("bobs_checkpoint")
def test_snapshots_are_owned_and_reading_through_them_is_decided(cluster: Cluster, store: Any) -> None:
    answer = cluster.create(snapshot("steal", "llm-70b-ckpt"), "vic", VIC)
    assert not answer.allowed and "may not clone PersistentVolumeClaim research/llm-70b-ckpt" in answer.message
    assert cluster.create(snapshot("ckpt-snap", "llm-70b-ckpt"), "bob", BOB).allowed
    assert {r.name: r.owner for r in store.reservations()}["ckpt-snap"] == "bob"
    assert cluster.get("VolumeSnapshot", "ckpt-snap")["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"
    restore = cluster.create(pvc("restored", source=snapshot_source("ckpt-snap")), "vic", VIC)
    assert not restore.allowed and "may not clone VolumeSnapshot research/ckpt-snap" in restore.message
    assert cluster.create(pvc("restored", source=snapshot_source("ckpt-snap")), "lena", LENA).allowed
    # Deleting bob's snapshot follows kill scopes.
    assert not cluster.delete("VolumeSnapshot", "ckpt-snap", "vic", VIC).allowed
    assert cluster.delete("VolumeSnapshot", "ckpt-snap", "bob", BOB).allowed


@pytest.mark.usefixtures("bobs_checkpoint")
def test_an_ephemeral_volume_cloning_anothers_claim_is_denied(cluster: Cluster) -> None:
    pod = cpu_pod("scratch", volumes=[{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
        "spec": {**pvc("x", source=claim_source("llm-70b-ckpt"))["spec"]}}}}])
    answer = cluster.create(pod, "vic", VIC)
    assert not answer.allowed and "clone PersistentVolumeClaim research/llm-70b-ckpt" in answer.message
    pod["metadata"]["name"] = "scratch-bob"
    assert cluster.create(pod, "bob", BOB).allowed


@pytest.mark.usefixtures("bobs_checkpoint")
def test_a_statefulset_claim_template_cloning_anothers_claim_is_denied(cluster: Cluster) -> None:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "eval", "namespace": "research"},
           "spec": {"replicas": 2, "serviceName": "eval", "selector": {"matchLabels": {"app": "eval"}},
                    "template": {"metadata": {"labels": {"app": "eval"}}, "spec": {"containers": [container(1)]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                              "spec": pvc("x", source=claim_source("llm-70b-ckpt"))["spec"]}]}}
    answer = cluster.create(sts, "otto", OTTO)
    assert not answer.allowed and "volumeClaimTemplates[0] dataSource" in answer.message
    assert cluster.create(sts, "bob", BOB).allowed


# ----------------------------------------------------------------- image pull Secrets, ServiceAccounts

def test_image_pull_secrets_of_another_team_are_denied(cluster: Cluster) -> None:
    assert cluster.create(regcred("vision-regcred"), "otto", OTTO).allowed
    pod = cpu_pod("pull", imagePullSecrets=[{"name": "vision-regcred"}])
    answer = cluster.create(pod, "eve", EVE)
    assert not answer.allowed
    assert "may not read Secret research/vision-regcred (imagePullSecrets); it belongs to otto" in answer.message
    pod["metadata"]["name"] = "pull-otto"
    assert cluster.create(pod, "otto", OTTO).allowed


@pytest.mark.parametrize(("user", "groups", "allowed"), [
    ("eve", EVE, False), ("rita", RITA, False), ("vic", VIC, False), ("bob", BOB, True), ("lena", LENA, True),
    ("root", ADMIN, True),
])
def test_running_as_another_persons_service_account_is_a_use(cluster: Cluster, user: str,
                                                             groups: tuple[str, ...], allowed: bool) -> None:
    assert cluster.create(service_account("bob-sa"), "bob", BOB).allowed
    answer = cluster.create(cpu_pod(f"as-{user}", serviceAccountName="bob-sa"), user, groups)
    assert answer.allowed is allowed, answer.message
    if not allowed:
        assert "may not run pods as ServiceAccount research/bob-sa; it belongs to bob" in answer.message


def test_deprecated_service_account_field_and_gpu_pods_are_decided_too(cluster: Cluster) -> None:
    assert cluster.create(service_account("bob-sa"), "bob", BOB).allowed
    assert not cluster.create(cpu_pod("old", serviceAccount="bob-sa"), "eve", EVE).allowed
    job = make_job(gpus=1).named("research", "as-bob").obj()
    job["spec"]["template"]["spec"]["serviceAccountName"] = "bob-sa"
    answer = cluster.create(job, "eve", EVE)
    assert not answer.allowed and "ServiceAccount research/bob-sa" in answer.message


def test_default_and_unowned_service_accounts_are_anyones(cluster: Cluster) -> None:
    assert cluster.create(cpu_pod("d", serviceAccountName="default"), "eve", EVE).allowed
    assert cluster.create(cpu_pod("legacy", serviceAccountName="legacy-sa"), "eve", EVE).allowed


def test_service_accounts_are_owned_objects(cluster: Cluster, store: Any) -> None:
    assert cluster.create(service_account("bob-sa"), "bob", BOB).allowed
    assert {r.name: r.owner for r in store.reservations()} == {"bob-sa": "bob"}
    sa = cluster.get("ServiceAccount", "bob-sa")
    sa["automountServiceAccountToken"] = True
    assert not cluster.update(sa, "eve", EVE).allowed
    assert not cluster.delete("ServiceAccount", "bob-sa", "rita", RITA).allowed
    assert cluster.update(sa, "lena", LENA).allowed
    assert cluster.delete("ServiceAccount", "bob-sa", "bob", BOB).allowed


# ----------------------------------------------------------------- name squatting

def bobs_job_reading(name: str = "train", **kinds: str) -> dict[str, Any]:
    job = make_job(gpus=4).named("research", name).obj()
    spec = job["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "cfg", "configMap": {"name": kinds.get("configmap", "bob-train-config")}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "cfg", "mountPath": "/etc/train"}]
    if "secret" in kinds:
        spec["containers"][0]["envFrom"] = [{"secretRef": {"name": kinds["secret"]}}]
    if "account" in kinds:
        spec["serviceAccountName"] = kinds["account"]
    return job


def test_squatting_a_config_name_anothers_job_awaits_is_denied(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(), "bob", BOB).allowed    # the ConfigMap does not exist yet
    answer = cluster.create(configmap("bob-train-config"), "eve", EVE)
    assert not answer.allowed
    assert ("may not create ConfigMap research/bob-train-config: a workload of bob (team pretrain) references it"
            in answer.message)
    assert not cluster.create(configmap("bob-train-config"), "otto", OTTO).allowed
    assert cluster.create(configmap("bob-train-config"), "bob", BOB).allowed


def test_a_lead_may_create_what_their_teams_job_awaits(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(), "bob", BOB).allowed
    assert cluster.create(configmap("bob-train-config"), "lena", LENA).allowed


def test_squatting_secrets_and_service_accounts_is_denied(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(secret="bob-wandb", account="bob-runner"), "bob", BOB).allowed
    assert not cluster.create(regcred("bob-wandb"), "eve", EVE).allowed
    assert not cluster.create(service_account("bob-runner"), "vic", VIC).allowed
    assert cluster.create(service_account("bob-runner"), "bob", BOB).allowed


def test_names_are_free_again_once_the_job_is_gone(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(), "bob", BOB).allowed
    assert not cluster.create(configmap("bob-train-config"), "eve", EVE).allowed
    assert cluster.delete("Job", "train", "bob", BOB).allowed
    assert cluster.create(configmap("bob-train-config"), "eve", EVE).allowed


def test_an_edit_that_drops_a_reference_frees_the_name(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(), "bob", BOB).allowed
    job = cluster.get("Job", "train")
    job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "bob-train-config-v2"
    assert cluster.update(job, "bob", BOB).allowed
    assert cluster.create(configmap("bob-train-config"), "eve", EVE).allowed
    assert not cluster.create(configmap("bob-train-config-v2"), "eve", EVE).allowed


def test_ones_own_awaited_name_and_other_namespaces_are_free(cluster: Cluster) -> None:
    assert cluster.create(bobs_job_reading(configmap="eve-config"), "eve", EVE).allowed
    assert cluster.create(configmap("eve-config"), "eve", EVE).allowed
    assert cluster.create(bobs_job_reading(name="bobs"), "bob", BOB).allowed
    other = configmap("bob-train-config")
    other["metadata"]["namespace"] = "vision"
    body_ok = cluster.create(other, "eve", EVE)
    assert body_ok.allowed, body_ok.message


# ----------------------------------------------------------------- escape hatches of every pod

CPU_HATCHES: dict[str, dict[str, Any]] = {
    "hostPath": {"volumes": [{"name": "h", "hostPath": {"path": "/var/lib/kubelet"}}]},
    "privileged": {"containers": [{**container(0), "securityContext": {"privileged": True}}]},
    "inlineStorage": {"volumes": [{"name": "datasets", "nfs": {"server": "nfs.lab", "path": "/exports/vision"}}]},
    "gpuEnv": {"containers": [{**container(0), "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]},
}


@pytest.mark.parametrize("hatch", sorted(CPU_HATCHES))
def test_cpu_pods_of_an_intern_may_not_use_escape_hatches(cluster: Cluster, hatch: str) -> None:
    answer = cluster.create(cpu_pod(f"cpu-{hatch.lower()}", **CPU_HATCHES[hatch]), "eve", EVE)
    assert not answer.allowed and f"may not use {hatch} in pods" in answer.message
    assert cluster.create(cpu_pod(f"admin-{hatch.lower()}", **CPU_HATCHES[hatch]), "root", ADMIN).allowed


@pytest.mark.parametrize("volume", [
    {"csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "vault"}}},
    {"cephfs": {"monitors": ["10.0.0.1:6789"], "path": "/"}},
    {"iscsi": {"targetPortal": "10.0.0.2:3260", "iqn": "iqn.2001-04.com.lab:disk", "lun": 0}},
    {"awsElasticBlockStore": {"volumeID": "vol-0abc"}},
])
def test_inline_storage_outside_claims_is_a_hatch(cluster: Cluster, volume: dict[str, Any]) -> None:
    answer = cluster.create(cpu_pod("inline", volumes=[{"name": "v", **volume}]), "bob", BOB)
    assert not answer.allowed and "may not use inlineStorage in pods" in answer.message


def test_nvidia_runtime_variables_set_to_void_are_harmless(cluster: Cluster) -> None:
    env = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}, {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "none"}]
    assert cluster.create(cpu_pod("void", containers=[{**container(0), "env": env}]), "eve", EVE).allowed
    caps = [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
    assert not cluster.create(cpu_pod("caps", containers=[{**container(0), "env": caps}]), "eve", EVE).allowed
    from_field = [{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}]
    assert not cluster.create(cpu_pod("vf", initContainers=[{**container(0), "env": from_field}]), "eve", EVE).allowed


def test_a_kubectl_debug_node_pod_is_denied_to_a_lead_whatever_their_allowances(
        cluster: Cluster, service: AdmissionService, policy_dir: Any) -> None:
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace(
        "  lead:\n    max_gpus_per_workload: 4096",
        "  lead:\n    max_gpus_per_workload: 4096\n"
        "    escape_hatches: [hostPath, hostPID, hostIPC, hostNetwork, nodeName]"))
    service.policies.reload(force=True)
    answer = cluster.create(debug_node_pod(), "lena", LENA)
    assert not answer.allowed
    assert "may not run a node debugging pod (kubectl debug node/gpu-node-17)" in answer.message
    assert cluster.create(debug_node_pod("gpu-node-18"), "root", ADMIN).allowed
    # The same allowances without the node's root file system are the lead's to use.
    pod = debug_node_pod("gpu-node-19")
    pod["spec"]["volumes"][0]["hostPath"]["path"] = "/var/log"
    assert cluster.create(pod, "lena", LENA).allowed


def test_a_cpu_deployment_template_is_checked_for_hatches(cluster: Cluster) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "research"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"hostPID": True, "containers": [container(0)]}}}}
    answer = cluster.create(dep, "eve", EVE)
    assert not answer.allowed and "may not use hostPID in pods" in answer.message
    assert "(pod template spec.template)" in answer.message


def test_an_update_adding_a_hatch_to_a_cpu_workload_is_denied(cluster: Cluster) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "research"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container(0)]}}}}
    assert cluster.create(dep, "eve", EVE).allowed
    edited = cluster.get("Deployment", "web")
    edited["spec"]["template"]["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
    assert not cluster.update(edited, "eve", EVE).allowed


def test_controllers_cpu_pods_are_left_alone(cluster: Cluster) -> None:
    pod = cpu_pod("rs-pod", hostNetwork=True)
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                           "uid": "uid-rs", "controller": True}]
    assert cluster.create(pod, REPLICASET_CONTROLLER, SYSTEM).allowed


def test_a_person_with_no_role_may_not_use_hatches_either(cluster: Cluster) -> None:
    assert not cluster.create(cpu_pod("net", hostNetwork=True), "mallory", ()).allowed
    assert cluster.create(cpu_pod("plain"), "mallory", ()).allowed
