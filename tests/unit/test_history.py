"""gateway.audit.history: what an UPDATE changed, field by field, never a secret value."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from conftest import make_deployment, make_job, make_pod, make_pytorchjob
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.history import MAX_CHANGES, MAX_SHOWN, changes, keyed_digest
from gateway.audit.ports import kind_names
from gateway.cli.render import change_text, history_text
from gateway.errors import RequestError

KEY = b"k" * 32
digest = keyed_digest(KEY)


def diff(old: dict[str, Any], new: dict[str, Any], group: str = "kubeflow.org", kind: str = "PyTorchJob"):
    return changes(group, kind, old, new, digest=digest)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"]["Worker"]


def pytorch(job: dict[str, Any]) -> dict[str, Any]:
    return worker(job)["template"]["spec"]["containers"][0]


def edited(obj: dict[str, Any], edit) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    edit(new)
    return new


JOB = make_pytorchjob(workers=3).obj()


# ------------------------------------------------------------------ the digest


def test_the_digest_is_a_keyed_hmac_cut_to_16_hex_digits():
    assert digest(b"hunter2") == digest(b"hunter2")
    assert len(digest(b"hunter2")) == 16 and int(digest(b"hunter2"), 16) >= 0
    assert digest(b"hunter2") != keyed_digest(b"x" * 32)(b"hunter2")  # another installation, another digest
    with pytest.raises(ValueError):
        keyed_digest(b"short")


# ------------------------------------------------------------------ workloads


def test_no_change_no_record():
    assert diff(JOB, copy.deepcopy(JOB)) == []


def test_an_image_change_names_the_template_and_the_container():
    new = edited(JOB, lambda j: pytorch(j).update(image="ghcr.io/eve/llm:evil"))
    assert diff(JOB, new) == [{"field": "image", "change": "changed", "template": "Worker", "container": "pytorch",
                               "old": "ghcr.io/lab/train:1", "new": "ghcr.io/eve/llm:evil"}]


def test_command_and_args_are_shown_shell_quoted():
    def edit(j):
        pytorch(j).update(command=["python", "train.py"], args=["--note", "two words"])

    assert diff(JOB, edited(JOB, edit)) == [
        {"field": "command", "change": "added", "template": "Worker", "container": "pytorch",
         "new": "python train.py"},
        {"field": "args", "change": "added", "template": "Worker", "container": "pytorch",
         "new": "--note 'two words'"},
    ]


def test_env_records_names_and_sources_never_values():
    old = edited(JOB, lambda j: pytorch(j).update(env=[
        {"name": "LR", "value": "0.001"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "GONE", "value": "x"},
    ]))
    new = edited(old, lambda j: pytorch(j).update(env=[
        {"name": "LR", "value": "0.1"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "eve-db", "key": "password"}}},
        {"name": "WANDB_API_KEY", "value": "wandb-key-very-secret"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]))
    where = {"template": "Worker", "container": "pytorch"}
    assert diff(old, new) == [
        {"field": "env", "change": "changed", **where, "key": "LR", "old": "literal", "new": "literal"},
        {"field": "env", "change": "changed", **where, "key": "DB_PASSWORD",
         "old": "secret db/password", "new": "secret eve-db/password"},
        {"field": "env", "change": "removed", **where, "key": "GONE", "old": "literal"},
        {"field": "env", "change": "added", **where, "key": "WANDB_API_KEY", "new": "literal"},
        {"field": "env", "change": "added", **where, "key": "NODE", "new": "field spec.nodeName"},
    ]
    text = json.dumps(diff(old, new))
    assert "0.001" not in text and "0.1" not in text and "wandb-key-very-secret" not in text


def test_env_from_resources_and_volume_mounts():
    def edit(j):
        pytorch(j).update(envFrom=[{"secretRef": {"name": "tokens"}}],
                          volumeMounts=[{"name": "data", "mountPath": "/data", "readOnly": True}])
        pytorch(j)["resources"] = {"limits": {"nvidia.com/gpu": 16}, "requests": {"cpu": "8"}}

    where = {"template": "Worker", "container": "pytorch"}
    assert diff(JOB, edited(JOB, edit)) == [
        {"field": "envFrom", "change": "added", **where, "key": "secret tokens"},
        {"field": "resources", "change": "changed", **where, "key": "limits.nvidia.com/gpu", "old": 8, "new": 16},
        {"field": "resources", "change": "added", **where, "key": "requests.cpu", "new": "8"},
        {"field": "volumeMount", "change": "added", **where, "key": "/data", "new": "data (read-only)"},
    ]


def test_volumes_and_pod_settings_of_a_template():
    old = edited(JOB, lambda j: worker(j)["template"]["spec"].update(
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                 {"name": "cache", "emptyDir": {}}]))

    def edit(j):
        worker(j)["template"]["spec"].update(
            serviceAccountName="admin-sa", hostNetwork=True,
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "eve-datasets"}},
                     {"name": "sock", "hostPath": {"path": "/var/run/containerd"}},
                     {"name": "creds", "projected": {"sources": [{"secret": {"name": "a"}}]}}])

    where = {"template": "Worker"}
    assert diff(old, edited(old, edit)) == [
        {"field": "serviceAccountName", "change": "added", **where, "new": "admin-sa"},
        {"field": "hostNetwork", "change": "added", **where, "new": "true"},
        {"field": "volume", "change": "changed", **where, "key": "data",
         "old": "persistentVolumeClaim datasets", "new": "persistentVolumeClaim eve-datasets"},
        {"field": "volume", "change": "removed", **where, "key": "cache", "old": "emptyDir"},
        {"field": "volume", "change": "added", **where, "key": "sock", "new": "hostPath /var/run/containerd"},
        {"field": "volume", "change": "added", **where, "key": "creds", "new": "projected secret a"},
    ]


def test_containers_and_templates_added_or_removed():
    def edit(j):
        containers = worker(j)["template"]["spec"]["containers"]
        containers.append({"name": "sidecar", "image": "ghcr.io/eve/miner:1"})
        del j["spec"]["pytorchReplicaSpecs"]["Master"]

    assert diff(JOB, edited(JOB, edit)) == [
        {"field": "count", "change": "removed", "key": "spec.pytorchReplicaSpecs.Master.replicas", "old": 1},
        {"field": "template", "change": "removed", "template": "Master"},
        {"field": "container", "change": "added", "template": "Worker", "container": "sidecar",
         "new": "ghcr.io/eve/miner:1"},
    ]


def test_replica_counts_of_several_kinds():
    new = edited(JOB, lambda j: worker(j).update(replicas=64))
    assert diff(JOB, new) == [{"field": "count", "change": "changed",
                               "key": "spec.pytorchReplicaSpecs.Worker.replicas", "old": 3, "new": 64}]
    dep = make_deployment(replicas=1).obj()
    assert diff(dep, edited(dep, lambda d: d["spec"].update(replicas=5)), "apps", "Deployment") == [
        {"field": "count", "change": "changed", "key": "spec.replicas", "old": 1, "new": 5}]
    job = make_job(parallelism=2).obj()
    assert diff(job, edited(job, lambda d: d["spec"].update(parallelism=9)), "batch", "Job") == [
        {"field": "count", "change": "changed", "key": "spec.parallelism", "old": 2, "new": 9}]
    jobset = {"spec": {"replicatedJobs": [
        {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 4, "template": {
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}}]}}
    bigger = edited(jobset, lambda d: d["spec"]["replicatedJobs"][0].update(replicas=8))
    assert diff(jobset, bigger, "jobset.x-k8s.io", "JobSet") == [
        {"field": "count", "change": "changed", "key": "spec.replicatedJobs[workers].replicas", "old": 2, "new": 8}]


def test_a_scale_is_its_replica_count():
    old = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}}
    new = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}}
    assert diff(old, new, "autoscaling", "Scale") == [
        {"field": "count", "change": "changed", "key": "spec.replicas", "old": 1, "new": 3}]


def test_a_pod_is_its_own_template():
    pod = make_pod().obj()
    new = edited(pod, lambda p: p["spec"]["containers"][0].update(image="ghcr.io/eve/x:1"))
    assert diff(pod, new, "", "Pod") == [{"field": "image", "change": "changed", "template": "pod",
                                          "container": "main", "old": "ghcr.io/lab/train:1",
                                          "new": "ghcr.io/eve/x:1"}]


def test_labels_and_annotations_keys_only_of_the_object_and_its_templates():
    old = edited(JOB, lambda j: j["metadata"].update(labels={"app": "llm"}, annotations={
        "note": "old", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}))

    def edit(j):
        j["metadata"].update(labels={"app": "llm", "tier": "gold"}, annotations={
            "note": "new", "kubectl.kubernetes.io/last-applied-configuration": "{changed}"})
        worker(j)["template"]["metadata"] = {"annotations": {"gpu-gateway.io/owner": "eve"}}

    assert diff(old, edited(old, edit)) == [
        {"field": "label", "change": "added", "key": "tier"},
        {"field": "annotation", "change": "changed", "key": "note"},
        {"field": "annotation", "change": "added", "template": "Worker", "key": "gpu-gateway.io/owner"},
    ]


def test_a_generic_kind_with_templates_sharing_a_name_is_told_apart_by_path():
    def obj(image: str) -> dict[str, Any]:
        template = {"spec": {"containers": [{"name": "c", "image": image}]}}
        return {"spec": {"a": {"template": copy.deepcopy(template)}, "b": {"template": copy.deepcopy(template)}}}

    new = obj("x:2")
    new["spec"]["a"]["template"]["spec"]["containers"][0]["image"] = "x:1"
    assert diff(obj("x:1"), new, "example.com", "Thing") == [
        {"field": "image", "change": "changed", "template": "spec.b.template", "container": "c",
         "old": "x:1", "new": "x:2"}]


def test_long_values_are_cut_and_many_changes_are_capped():
    new = edited(JOB, lambda j: pytorch(j).update(image="x" * 1000))
    [change] = diff(JOB, new)
    assert len(change["new"]) == MAX_SHOWN and change["new"].endswith("…")
    old_cm = {"data": {}}
    new_cm = {"data": {f"k{i}": "v" for i in range(MAX_CHANGES * 2)}}
    found = changes("", "ConfigMap", old_cm, new_cm, digest=digest)
    assert len(found) == MAX_CHANGES
    assert found[-1] == {"field": "more", "change": "changed", "new": MAX_CHANGES + 1}


# ------------------------------------------------------------------ ConfigMaps, Secrets, PVCs


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


SECRET_VALUES = [b"hunter2", b"correct horse battery staple", b"s3cr3t-token-XYZ"]


def test_secret_keys_are_hashed_from_the_decoded_value_never_shown():
    old = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "data": {"password": b64(b"hunter2"), "token": b64(b"s3cr3t-token-XYZ"), "same": b64(b"x")}}
    new = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "data": {"password": b64(b"correct horse battery staple"), "same": b64(b"x")},
           "stringData": {"api": "hunter2"}}
    found = changes("", "Secret", old, new, digest=digest)
    assert found == [
        {"field": "data", "change": "changed", "key": "password",
         "old": digest(b"hunter2"), "new": digest(b"correct horse battery staple")},
        {"field": "data", "change": "removed", "key": "token", "old": digest(b"s3cr3t-token-XYZ")},
        {"field": "data", "change": "added", "key": "api", "new": digest(b"hunter2")},
    ]
    text = json.dumps(found)
    for value in SECRET_VALUES:
        assert value.decode() not in text and b64(value) not in text


def test_string_data_that_restates_data_is_no_change():
    old = {"kind": "Secret", "data": {"password": b64(b"hunter2")}}
    new = {"kind": "Secret", "data": {"password": b64(b"hunter2")}, "stringData": {"password": "hunter2"}}
    assert changes("", "Secret", old, new, digest=digest) == []


def test_configmap_keys_of_data_and_binary_data_are_hashed():
    old = {"kind": "ConfigMap", "data": {"train.yaml": "lr: 0.1\n"}, "binaryData": {"blob": b64(b"\x00\x01")}}
    new = {"kind": "ConfigMap", "data": {"train.yaml": "lr: 9\n"}, "binaryData": {"blob": b64(b"\x00\x02")},
           "immutable": True}
    assert changes("", "ConfigMap", old, new, digest=digest) == [
        {"field": "data", "change": "changed", "key": "train.yaml",
         "old": digest(b"lr: 0.1\n"), "new": digest(b"lr: 9\n")},
        {"field": "binaryData", "change": "changed", "key": "blob",
         "old": digest(b"\x00\x01"), "new": digest(b"\x00\x02")},
        {"field": "immutable", "change": "added", "new": "true"},
    ]


def test_pvc_storage_and_access_modes():
    old = {"kind": "PersistentVolumeClaim", "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "10Gi"}}}}
    new = {"kind": "PersistentVolumeClaim", "spec": {"accessModes": ["ReadWriteMany"],
                                                     "resources": {"requests": {"storage": "1Ti"}}}}
    assert changes("", "PersistentVolumeClaim", old, new, digest=digest) == [
        {"field": "resources", "change": "changed", "key": "requests.storage", "old": "10Gi", "new": "1Ti"},
        {"field": "accessModes", "change": "changed", "old": "ReadWriteOnce", "new": "ReadWriteMany"},
    ]


# ------------------------------------------------------------------ junk


def test_no_diff_without_both_sides():
    assert changes("", "Secret", None, {"data": {}}, digest=digest) == []
    assert changes("", "Secret", {"data": {}}, None, digest=digest) == []
    assert changes("", "Secret", {"data": {}}, "junk", digest=digest) == []  # type: ignore[arg-type]


def test_unreadable_parts_are_skipped():
    def bad(j):  # the core refuses to read it, so its templates are not compared
        worker(j).update(replicas=-1)
        pytorch(j).update(image="x:2")

    assert diff(JOB, edited(JOB, bad)) == [{"field": "count", "change": "changed",
                                            "key": "spec.pytorchReplicaSpecs.Worker.replicas", "old": 3, "new": -1}]
    junk = {"metadata": {"labels": "x"}, "spec": {"template": {"spec": {"containers": ["x", 3, None],
                                                                        "volumes": {"a": 1}}}}}
    assert changes("apps", "Deployment", make_deployment().obj(), junk, digest=digest)
    secret = {"data": {"a": "not base64!", "b": 12, "c": None}, "stringData": ["x"]}
    assert len(changes("", "Secret", {"data": {}}, secret, digest=digest)) == 3


def test_what_json_cannot_hold_is_shown_as_a_placeholder_and_too_deep_is_a_request_error():
    new = edited(JOB, lambda j: worker(j).update(replicas=10**30))
    assert diff(JOB, new)[0] == {"field": "count", "change": "changed",
                                 "key": "spec.pytorchReplicaSpecs.Worker.replicas",
                                 "old": 3, "new": "(an integer of 100 bits)"}
    deep: list[Any] = []
    for _ in range(1000):  # as deep as the webhook's JSON reader allows
        deep = [deep]
    deeper = edited(JOB, lambda j: pytorch(j).update(command=deep))
    assert diff(JOB, deeper)[0]["new"] == "(a value that cannot be shown)"
    with pytest.raises(RequestError, match="nested too deeply"):  # comparing two such values
        diff(deeper, edited(JOB, lambda j: pytorch(j).update(command=[deep])))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["spec", "metadata", "template", "containers", "env", "name", "image", "replicas",
                         "volumes", "data", "stringData", "labels", "pytorchReplicaSpecs", "Worker",
                         "resources", "limits", "valueFrom", "secretKeyRef", "volumeMounts", "mountPath"]),
        inner, max_size=4),
    max_leaves=30,
)
_KINDS = [("kubeflow.org", "PyTorchJob"), ("apps", "Deployment"), ("", "Pod"), ("", "Secret"),
          ("", "ConfigMap"), ("", "PersistentVolumeClaim"), ("example.com", "Unknown"), ("autoscaling", "Scale")]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(_KINDS), old=_json, new=_json)
def test_junk_never_raises_anything_but_a_request_error(kind, old, new):
    try:
        found = changes(*kind, old, new, digest=digest)
    except RequestError:
        return
    json.dumps(found)  # always JSON
    for change in found:
        assert change["change"] in ("added", "removed", "changed")
        change_text(change)


# ------------------------------------------------------------------ reading it


def test_changes_read_as_sentences():
    assert change_text({"field": "image", "change": "changed", "template": "Worker", "container": "pytorch",
                        "old": "ghcr.io/lab/llm:1", "new": "ghcr.io/eve/llm:evil"}) == (
        "image of container pytorch in Worker: ghcr.io/lab/llm:1 -> ghcr.io/eve/llm:evil")
    assert change_text({"field": "env", "change": "changed", "template": "Worker", "container": "pytorch",
                        "key": "LR", "old": "literal", "new": "literal"}) == (
        "env LR of container pytorch in Worker: changed (value not recorded)")
    assert change_text({"field": "count", "change": "changed", "key": "spec.replicas", "old": 1, "new": 3}) == (
        "spec.replicas: 1 -> 3")
    assert change_text({"field": "data", "change": "added", "key": "password", "new": "0123abcd0123abcd"}) == (
        "data key password: added (digest 0123abcd0123abcd)")
    assert change_text({"field": "label", "change": "removed", "key": "tier"}) == "label tier: removed"
    assert change_text({"field": "more", "change": "changed", "new": 7}) == "... and 7 more changes"
    assert change_text({"field": "container", "change": "added", "template": "Worker", "container": "miner",
                        "new": "ghcr.io/eve/miner:1"}) == "container miner in Worker: added (ghcr.io/eve/miner:1)"
    assert change_text({"field": "template", "change": "removed", "template": "Master"}) == (
        "template Master: removed")


def test_a_timeline_puts_further_changes_under_the_first():
    rows = [
        {"ts": 0.0, "user": "bob", "role": "researcher", "action": "launch", "decision": "allowed",
         "gpus": 32, "changes": []},
        {"ts": 60.0, "user": "mallory", "role": "", "action": "modify", "decision": "denied", "gpus": 32,
         "dry_run": True, "changes": [{"field": "label", "change": "added", "key": "a"},
                                      {"field": "label", "change": "added", "key": "b"}]},
    ]
    assert history_text(rows).splitlines() == [
        "1970-01-01 00:00:00  bob (researcher)   launch  ALLOWED           32 GPUs",
        "1970-01-01 00:01:00  mallory (no role)  modify  DENIED (dry run)  label a: added",
        "                                                                  label b: added",
    ]
    assert history_text([]) == "no audit records match"


@pytest.mark.parametrize(("asked", "recorded"), [
    ("PyTorchJob", "pytorchjob"), ("pytorchjobs", "pytorchjob"), ("PYTORCHJOBS", "pytorchjobs"),
    ("pytorchjobs.kubeflow.org", "pytorchjob"), ("Deployment", "deployments"), ("policies", "policy"),
    ("NetworkPolicy", "networkpolicies"), ("Ingress", "ingresses"), ("ingresses", "ingress"),
])
def test_kind_names_match_the_kind_and_its_resource(asked, recorded):
    assert recorded in kind_names(asked)
