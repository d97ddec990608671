"""What a pod spec reaches beyond its own containers: data it references, and ways out of
its sandbox. Pure functions over one decoded pod spec.

References are the PersistentVolumeClaims, ConfigMaps and Secrets a pod mounts or reads,
each with whether the pod can write to it. Escape hatches are pod settings that reach the
node (host paths and namespaces, privilege, capabilities) or skip the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.pointer import is_object

PVC, CONFIGMAP, SECRET = "PersistentVolumeClaim", "ConfigMap", "Secret"
SERVICE_ACCOUNT, SNAPSHOT = "ServiceAccount", "VolumeSnapshot"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"

#: Escape hatch names, as used in limits.yaml (`roles.<role>.escape_hatches`) and in rule names.
HATCHES = ("hostPath", "privileged", "capabilities", "hostPID", "hostIPC", "hostNetwork",
           "nodeName", "schedulerName", "inlineStorage", "gpuEnv")

#: Inline volume sources that reach storage outside PersistentVolumeClaims (and so outside the
#: ledger): network file systems, block devices, cloud disks, inline CSI drivers.
INLINE_STORAGE = ("nfs", "iscsi", "cephfs", "glusterfs", "rbd", "fc", "flexVolume", "csi", "azureFile",
                  "awsElasticBlockStore", "gcePersistentDisk", "portworxVolume", "quobyte", "storageos",
                  "scaleIO", "vsphereVolume", "cinder", "flocker", "photonPersistentDisk", "azureDisk")

#: Environment variables the NVIDIA container runtime may honour to hand GPUs to a container
#: that asked for none; any value but these is a hatch.
GPU_ENV = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES")
GPU_ENV_HARMLESS = frozenset({"void", "none"})

#: Capabilities a container may add without the `capabilities` hatch (the runtime's defaults
#: that images commonly re-add). Everything else, SYS_ADMIN and SYS_PTRACE first, is a hatch.
DEFAULT_SAFE_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP", "IPC_LOCK",
})


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str
    """PersistentVolumeClaim, ConfigMap, Secret, ServiceAccount or VolumeSnapshot."""
    name: str
    writable: bool
    """True for a PVC mounted read-write by at least one container."""
    via: str
    """Where the pod refers to it, for messages: `volume data`, `envFrom of container x`."""
    clone: bool = False
    """True for a claim or snapshot a new claim is cloned or restored from (its data is read)."""


@dataclass(frozen=True, slots=True)
class Hatch:
    name: str
    """One of HATCHES."""
    detail: str


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    if not value or type(value) is not list:  # most fields are absent: skip the list building
        return []
    return [v for v in value if type(v) is dict or is_object(v)]


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init, app and ephemeral containers, in that order."""
    init, ephemeral = spec.get("initContainers"), spec.get("ephemeralContainers")
    if not init and not ephemeral:  # the usual pod: app containers only
        return _dicts(spec.get("containers"))
    return [*_dicts(init), *_dicts(spec.get("containers")), *_dicts(ephemeral)]


def _name(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _written_volumes(containers: list[Mapping[str, Any]]) -> set[str]:
    """Volumes some container mounts without readOnly: written through (an unmounted one is not)."""
    return {m["name"] for c in containers for m in _dicts(c.get("volumeMounts"))
            if m.get("readOnly") is not True and isinstance(m.get("name"), str)}


def clone_sources(claim_spec: Any, via: str) -> list[Reference]:
    """The claim or snapshot a new PersistentVolumeClaim's spec (`dataSource`, `dataSourceRef`)
    is cloned or restored from: a read of it."""
    if not is_object(claim_spec):
        return []
    found: list[Reference] = []
    for key in ("dataSource", "dataSourceRef"):
        src = claim_spec.get(key)
        if not is_object(src) or not _name(src.get("name")):
            continue
        kind, group = _name(src.get("kind")), _name(src.get("apiGroup"))
        if kind == PVC and not group:
            ref = Reference(PVC, src["name"], False, f"{via} {key}", clone=True)
        elif kind == SNAPSHOT and group == SNAPSHOT_GROUP:
            ref = Reference(SNAPSHOT, src["name"], False, f"{via} {key}", clone=True)
        else:
            continue
        if all((r.kind, r.name) != (ref.kind, ref.name) for r in found):
            found.append(ref)
    return found


def references(spec: Any) -> list[Reference]:
    """Every PVC, ConfigMap, Secret, ServiceAccount and VolumeSnapshot the pod spec mounts,
    reads, runs as or clones from, in spec order. The namespace's `default` ServiceAccount,
    which every pod may run as, is left out."""
    if not is_object(spec):
        return []
    refs: list[Reference] = []
    account = _name(spec.get("serviceAccountName")) or _name(spec.get("serviceAccount"))
    if account and account != "default":
        refs.append(Reference(SERVICE_ACCOUNT, account, False, "serviceAccountName"))
    for pull in _dicts(spec.get("imagePullSecrets")):
        if _name(pull.get("name")):
            refs.append(Reference(SECRET, pull["name"], False, "imagePullSecrets"))
    containers = _containers(spec)
    written: set[str] | None = None  # read once a read-write claim needs it
    for vol in _dicts(spec.get("volumes")):
        vname = _name(vol.get("name"))
        ephemeral = vol.get("ephemeral")
        if ephemeral is not None and is_object(ephemeral) and is_object(ephemeral.get("volumeClaimTemplate")):
            refs.extend(clone_sources(ephemeral["volumeClaimTemplate"].get("spec"), f"ephemeral volume {vname}"))
        claim = vol.get("persistentVolumeClaim")
        if claim is not None and is_object(claim) and _name(claim.get("claimName")):
            writable = claim.get("readOnly") is not True
            if writable:
                if written is None:
                    written = _written_volumes(containers)
                writable = vname in written
            refs.append(Reference(PVC, claim["claimName"], writable, f"volume {vname}"))
        config_map, secret = vol.get("configMap"), vol.get("secret")
        if config_map is not None and is_object(config_map) and _name(config_map.get("name")):
            refs.append(Reference(CONFIGMAP, config_map["name"], False, f"volume {vname}"))
        if secret is not None and is_object(secret) and _name(secret.get("secretName")):
            refs.append(Reference(SECRET, secret["secretName"], False, f"volume {vname}"))
        projected = vol.get("projected")
        if projected is not None and is_object(projected):
            for source in _dicts(projected.get("sources")):
                for key, kind in (("configMap", CONFIGMAP), ("secret", SECRET)):
                    src = source.get(key)
                    if is_object(src) and _name(src.get("name")):
                        refs.append(Reference(kind, src["name"], False, f"volume {vname}"))
    for c in containers:
        env_from, env = c.get("envFrom"), c.get("env")
        if not env_from and not env:
            continue
        cname = _name(c.get("name"))
        for source in _dicts(env_from):
            for key, kind in (("configMapRef", CONFIGMAP), ("secretRef", SECRET)):
                src = source.get(key)
                if is_object(src) and _name(src.get("name")):
                    refs.append(Reference(kind, src["name"], False, f"envFrom of container {cname}"))
        for var in env if type(env) is list else ():
            value_from = var.get("valueFrom") if type(var) is dict or is_object(var) else None
            if value_from is None or not is_object(value_from):  # most variables have a plain value
                continue
            for key, kind in (("configMapKeyRef", CONFIGMAP), ("secretKeyRef", SECRET)):
                src = value_from.get(key)
                if is_object(src) and _name(src.get("name")):
                    refs.append(Reference(kind, src["name"], False,
                                          f"env {_name(var.get('name'))} of container {cname}"))
    return refs


def escape_hatches(spec: Any, *, safe_capabilities: frozenset[str] = DEFAULT_SAFE_CAPABILITIES,
                   allowed_schedulers: frozenset[str] = frozenset({"default-scheduler"})) -> list[Hatch]:
    """The pod settings that reach the node or skip the scheduler, one Hatch each.

    One pass over the volumes and one over the containers: every pod a person submits is checked.
    """
    if not is_object(spec):
        return []
    found: list[Hatch] = []
    host_paths: set[str] = set()
    inline: set[str] = set()
    for v in _dicts(spec.get("volumes")):
        if _INLINE_KEYS.isdisjoint(v):  # the usual claim, emptyDir, configMap or secret volume
            continue
        kinds = _INLINE_KEYS & v.keys()
        if is_object(v.get("hostPath")):
            host_paths.add(_name(v["hostPath"].get("path")) or "?")
        inline.update(f"{key} (volume {_name(v.get('name'))})" for key in kinds - {"hostPath"}
                      if v.get(key) is not None)
    if host_paths:
        found.append(Hatch("hostPath", f"mounts host path {', '.join(sorted(host_paths))}"))
    for flag in ("hostPID", "hostIPC", "hostNetwork"):
        if spec.get(flag) is True:
            found.append(Hatch(flag, f"sets {flag}: true"))
    privileged: list[str] = []
    added: set[str] = set()
    gpu_env: set[str] = set()
    for c in _containers(spec):
        ctx = c.get("securityContext")
        if ctx is not None and is_object(ctx):
            if ctx.get("privileged") is True:
                privileged.append(_name(c.get("name")))
            caps = ctx.get("capabilities")
            if is_object(caps) and isinstance(caps.get("add"), list):
                added |= {str(a).upper().removeprefix("CAP_") for a in caps["add"]} - safe_capabilities
        env = c.get("env")
        if env and type(env) is list:
            for e in env:
                if (type(e) is dict or is_object(e)) and e.get("name") in GPU_ENV and _gpu_env(e):
                    gpu_env.add(f"{_name(e.get('name'))} in container {_name(c.get('name'))}")
    if privileged:
        found.append(Hatch("privileged", f"runs container {', '.join(privileged)} privileged"))
    if added:
        found.append(Hatch("capabilities", f"adds capabilities {', '.join(sorted(added))}"))
    node = spec.get("nodeName")
    if isinstance(node, str) and node:
        found.append(Hatch("nodeName", f"presets spec.nodeName {node} (skipping the scheduler)"))
    scheduler = spec.get("schedulerName")
    if isinstance(scheduler, str) and scheduler and scheduler not in allowed_schedulers:
        found.append(Hatch("schedulerName", f"uses scheduler {scheduler}"))
    if inline:
        found.append(Hatch("inlineStorage", f"mounts storage outside volume claims: {', '.join(sorted(inline))}"))
    if gpu_env:
        found.append(Hatch("gpuEnv", f"sets {', '.join(sorted(gpu_env))} (the NVIDIA runtime may hand it every GPU)"))
    return found


#: Volume keys that make a hatch: a host path, or storage reached outside claims.
_INLINE_KEYS = frozenset({"hostPath", *INLINE_STORAGE})


def _gpu_env(env: Mapping[str, Any]) -> bool:
    """An NVIDIA runtime variable set to anything but void/none; one from valueFrom may be anything."""
    if env.get("name") not in GPU_ENV:
        return False
    if env.get("valueFrom") is not None:
        return True
    value = env.get("value")
    return not (isinstance(value, str) and value.strip().lower() in GPU_ENV_HARMLESS)


def debugs_node(spec: Any) -> str:
    """The node a pod shaped like `kubectl debug node/NAME` gets a root shell on ("" if none):
    a preset nodeName, a host namespace, and the node's root file system mounted."""
    node = spec.get("nodeName") if is_object(spec) else None
    if not node or not isinstance(node, str):  # the usual pod: the scheduler picks its node
        return ""
    if not any(spec.get(flag) is True for flag in ("hostPID", "hostIPC", "hostNetwork")):
        return ""
    paths = [_name(v["hostPath"].get("path")) for v in _dicts(spec.get("volumes"))
             if is_object(v.get("hostPath"))]
    return node if any(p and not p.rstrip("/") for p in paths) else ""
