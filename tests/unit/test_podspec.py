"""What a pod spec reaches: data references and escape hatches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.admission.podspec import (
    CONFIGMAP,
    HATCHES,
    INLINE_STORAGE,
    PVC,
    SECRET,
    SERVICE_ACCOUNT,
    SNAPSHOT,
    SNAPSHOT_GROUP,
    clone_sources,
    debugs_node,
    escape_hatches,
    references,
)


def ctr(name: str = "main", **extra: object) -> dict[str, object]:
    return {"name": name, "image": "ghcr.io/lab/train:1", **extra}


def test_a_claim_mounted_read_write_is_writable() -> None:
    spec = {"volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "llm-ckpt"}}],
            "containers": [ctr(volumeMounts=[{"name": "ckpt", "mountPath": "/ckpt"}])]}
    assert [(r.kind, r.name, r.writable) for r in references(spec)] == [(PVC, "llm-ckpt", True)]


def test_read_only_on_the_volume_or_on_every_mount_is_read_only() -> None:
    on_volume = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}}],
                 "containers": [ctr(volumeMounts=[{"name": "d", "mountPath": "/d"}])]}
    every_mount = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}],
                   "containers": [ctr("a", volumeMounts=[{"name": "d", "mountPath": "/d", "readOnly": True}]),
                                  ctr("b", volumeMounts=[{"name": "d", "mountPath": "/e", "readOnly": True}])]}
    one_writer = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}],
                  "containers": [ctr("a", volumeMounts=[{"name": "d", "mountPath": "/d", "readOnly": True}])],
                  "initContainers": [ctr("init", volumeMounts=[{"name": "d", "mountPath": "/d"}])]}
    assert not references(on_volume)[0].writable
    assert not references(every_mount)[0].writable
    assert references(one_writer)[0].writable


def test_configmaps_and_secrets_by_volume_projection_envfrom_and_valuefrom() -> None:
    spec = {
        "volumes": [{"name": "cfg", "configMap": {"name": "train-config"}},
                    {"name": "tok", "secret": {"secretName": "hf-token"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}},
                                                            {"secret": {"name": "wandb"}},
                                                            {"serviceAccountToken": {"path": "t"}}]}}],
        "containers": [ctr(envFrom=[{"secretRef": {"name": "bobs-creds"}}, {"configMapRef": {"name": "env"}}],
                           env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}},
                                {"name": "PLAIN", "value": "x"}])],
    }
    got = [(r.kind, r.name, r.via) for r in references(spec)]
    assert got == [
        (CONFIGMAP, "train-config", "volume cfg"), (SECRET, "hf-token", "volume tok"),
        (CONFIGMAP, "kube-root-ca.crt", "volume p"), (SECRET, "wandb", "volume p"),
        (SECRET, "bobs-creds", "envFrom of container main"), (CONFIGMAP, "env", "envFrom of container main"),
        (SECRET, "s3", "env KEY of container main"),
    ]


def test_each_escape_hatch_is_named() -> None:
    spec = {"hostPID": True, "hostIPC": True, "hostNetwork": True, "nodeName": "gpu-17",
            "schedulerName": "my-scheduler",
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [ctr(securityContext={"privileged": True,
                                                "capabilities": {"add": ["SYS_ADMIN", "CAP_SYS_PTRACE", "CHOWN"]}})]}
    hatches = {h.name: h.detail for h in escape_hatches(spec)}
    assert set(hatches) == {"hostPath", "hostPID", "hostIPC", "hostNetwork", "privileged", "capabilities",
                            "nodeName", "schedulerName"}
    assert hatches["capabilities"] == "adds capabilities SYS_ADMIN, SYS_PTRACE"
    assert hatches["hostPath"] == "mounts host path /"


def test_an_ordinary_training_pod_has_no_hatch() -> None:
    spec = {"schedulerName": "default-scheduler", "hostNetwork": False,
            "containers": [ctr(securityContext={"capabilities": {"add": ["IPC_LOCK"]}, "privileged": False})]}
    assert escape_hatches(spec) == []


def test_junk_is_tolerated() -> None:
    for junk in (None, [], "x", {"volumes": "x", "containers": [1, None]}, {"volumes": [{"hostPath": 3}]}):
        assert references(junk) == [] or isinstance(references(junk), list)
        assert isinstance(escape_hatches(junk), list)


# ----------------------------------------------------------------- data reach beyond mounts

def test_image_pull_secrets_and_service_accounts_are_references() -> None:
    spec = {"serviceAccountName": "bob-sa", "imagePullSecrets": [{"name": "regcred"}, {}, "junk"],
            "containers": [ctr()]}
    got = [(r.kind, r.name, r.via) for r in references(spec)]
    assert got == [(SERVICE_ACCOUNT, "bob-sa", "serviceAccountName"), (SECRET, "regcred", "imagePullSecrets")]
    assert [r.name for r in references({"serviceAccount": "old-sa"})] == ["old-sa"]
    assert references({"serviceAccountName": "default", "serviceAccount": "default"}) == []


def test_an_ephemeral_volume_clones_its_data_source() -> None:
    template = {"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "ckpt"},
                         "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "ckpt"}}}
    spec = {"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": template}}]}
    refs = references(spec)
    assert [(r.kind, r.name, r.writable, r.clone) for r in refs] == [(PVC, "ckpt", False, True)]
    assert refs[0].via == "ephemeral volume scratch dataSource"


def test_clone_sources_know_claims_and_snapshots_only() -> None:
    spec = {"dataSource": {"apiGroup": SNAPSHOT_GROUP, "kind": SNAPSHOT, "name": "snap"},
            "dataSourceRef": {"apiGroup": "populator.example.com", "kind": "Dataset", "name": "imagenet"}}
    assert [(r.kind, r.name) for r in clone_sources(spec, "spec")] == [(SNAPSHOT, "snap")]
    # A snapshot named without its group, or a claim with one, is not what it claims to be.
    assert clone_sources({"dataSource": {"kind": SNAPSHOT, "name": "s"}}, "spec") == []
    assert clone_sources({"dataSource": {"apiGroup": "x.io", "kind": PVC, "name": "c"}}, "spec") == []


def test_inline_storage_and_nvidia_variables_are_hatches() -> None:
    spec = {"volumes": [{"name": "d", "nfs": {"server": "n", "path": "/"}}, {"name": "c", "csi": {"driver": "x"}},
                        {"name": "ok", "emptyDir": {}}],
            "containers": [ctr(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
                           ctr("quiet", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "VOID"}])]}
    hatches = {h.name: h.detail for h in escape_hatches(spec)}
    assert set(hatches) == {"inlineStorage", "gpuEnv"}
    assert hatches["inlineStorage"] == "mounts storage outside volume claims: csi (volume c), nfs (volume d)"
    assert "NVIDIA_VISIBLE_DEVICES in container main" in hatches["gpuEnv"]
    assert "quiet" not in hatches["gpuEnv"]


def test_a_node_debugging_pod_is_recognised() -> None:
    debug = {"nodeName": "n1", "hostPID": True, "volumes": [{"name": "r", "hostPath": {"path": "/"}}]}
    assert debugs_node(debug) == "n1"
    assert debugs_node({**debug, "volumes": [{"name": "r", "hostPath": {"path": "//"}}]}) == "n1"
    assert debugs_node({**debug, "volumes": [{"name": "r", "hostPath": {"path": "/var/log"}}]}) == ""
    assert debugs_node({**debug, "hostPID": False}) == ""
    assert debugs_node({**debug, "nodeName": ""}) == ""


_NAMES = st.text(alphabet="abc-", min_size=1, max_size=6)
_VOLUME = st.one_of(
    st.builds(lambda n, c: {"name": n, "persistentVolumeClaim": {"claimName": c}}, _NAMES, _NAMES),
    st.builds(lambda n, c: {"name": n, "secret": {"secretName": c}}, _NAMES, _NAMES),
    st.builds(lambda n, k: {"name": n, k: {}}, _NAMES, st.sampled_from(INLINE_STORAGE)),
    st.builds(lambda n, p: {"name": n, "hostPath": {"path": p}}, _NAMES, st.sampled_from(["/", "/x", ""])),
    st.builds(lambda n, c: {"name": n, "ephemeral": {"volumeClaimTemplate": {"spec": {
        "dataSource": {"kind": PVC, "name": c}}}}}, _NAMES, _NAMES),
)
_SPECS = st.fixed_dictionaries({"volumes": st.lists(_VOLUME, max_size=4)}, optional={
    "serviceAccountName": _NAMES, "imagePullSecrets": st.lists(st.builds(lambda n: {"name": n}, _NAMES), max_size=2),
    "nodeName": _NAMES, "hostPID": st.booleans(),
    "containers": st.lists(st.builds(lambda v: ctr(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": v}]),
                                     st.sampled_from(["all", "0", "void", "none", ""])), max_size=2)})


@given(_SPECS)
def test_every_named_object_is_a_reference_and_every_hatch_is_known(spec: dict[str, object]) -> None:
    refs = references(spec)
    named = {(PVC, v["persistentVolumeClaim"]["claimName"]) for v in spec["volumes"] if "persistentVolumeClaim" in v}
    named |= {(SECRET, v["secret"]["secretName"]) for v in spec["volumes"] if "secret" in v}
    assert named <= {(r.kind, r.name) for r in refs}
    assert all(r.clone == (r.via.startswith("ephemeral")) for r in refs)
    assert all(not r.writable for r in refs if r.kind != PVC or r.clone)
    hatches = escape_hatches(spec)
    assert {h.name for h in hatches} <= set(HATCHES)
    inline = any(k in v for v in spec["volumes"] for k in INLINE_STORAGE)
    assert inline == any(h.name == "inlineStorage" for h in hatches)
    if debugs_node(spec):
        assert {"hostPath", "nodeName", "hostPID"} <= {h.name for h in hatches}
