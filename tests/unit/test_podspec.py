"""What a pod spec reaches: data references and escape hatches."""

from __future__ import annotations

from gateway.core.podspec import CONFIGMAP, PVC, SECRET, escape_hatches, references


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
