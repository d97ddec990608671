"""What a pod spec reaches beyond its own containers: data it references, and ways out of
its sandbox. Pure functions over one decoded pod spec.

References are the PersistentVolumeClaims, ConfigMaps and Secrets a pod mounts or reads,
each with whether the pod can write to it. Escape hatches are pod settings that reach the
node (host paths and namespaces, privilege, capabilities) or skip the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PVC, CONFIGMAP, SECRET = "PersistentVolumeClaim", "ConfigMap", "Secret"

#: Escape hatch names, as used in limits.yaml (`roles.<role>.allow`) and in rule names.
HATCHES = ("hostPath", "privileged", "capabilities", "hostPID", "hostIPC", "hostNetwork",
           "nodeName", "schedulerName")

#: Capabilities a container may add without the `capabilities` hatch (the runtime's defaults
#: that images commonly re-add). Everything else, SYS_ADMIN and SYS_PTRACE first, is a hatch.
DEFAULT_SAFE_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP", "IPC_LOCK",
})


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str
    """PersistentVolumeClaim, ConfigMap or Secret."""
    name: str
    writable: bool
    """True for a PVC mounted read-write by at least one container."""
    via: str
    """Where the pod refers to it, for messages: `volume data`, `envFrom of container x`."""


@dataclass(frozen=True, slots=True)
class Hatch:
    name: str
    """One of HATCHES."""
    detail: str


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    if not value or type(value) is not list:  # most fields are absent: skip the list building
        return []
    return [v for v in value if type(v) is dict or isinstance(v, Mapping)]


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from _dicts(spec.get(key))


def _name(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mounted_writable(spec: Mapping[str, Any], volume: str) -> bool:
    """A volume is written through unless every mount of it is readOnly (an unmounted one is not)."""
    mounts = [m for c in _containers(spec) for m in _dicts(c.get("volumeMounts")) if m.get("name") == volume]
    return any(m.get("readOnly") is not True for m in mounts)


def references(spec: Any) -> list[Reference]:
    """Every PVC, ConfigMap and Secret the pod spec mounts or reads, in spec order."""
    if not isinstance(spec, Mapping):
        return []
    refs: list[Reference] = []
    for vol in _dicts(spec.get("volumes")):
        vname = _name(vol.get("name"))
        where = f"volume {vname}"
        claim = vol.get("persistentVolumeClaim")
        if isinstance(claim, Mapping) and _name(claim.get("claimName")):
            writable = claim.get("readOnly") is not True and _mounted_writable(spec, vname)
            refs.append(Reference(PVC, claim["claimName"], writable, where))
        for key, kind, name_key in (("configMap", CONFIGMAP, "name"), ("secret", SECRET, "secretName")):
            src = vol.get(key)
            if isinstance(src, Mapping) and _name(src.get(name_key)):
                refs.append(Reference(kind, src[name_key], False, where))
        projected = vol.get("projected")
        if isinstance(projected, Mapping):
            for source in _dicts(projected.get("sources")):
                for key, kind in (("configMap", CONFIGMAP), ("secret", SECRET)):
                    src = source.get(key)
                    if isinstance(src, Mapping) and _name(src.get("name")):
                        refs.append(Reference(kind, src["name"], False, where))
    for c in _containers(spec):
        if not c.get("envFrom") and not c.get("env"):
            continue
        cname = _name(c.get("name"))
        for env_from in _dicts(c.get("envFrom")):
            for key, kind in (("configMapRef", CONFIGMAP), ("secretRef", SECRET)):
                src = env_from.get(key)
                if isinstance(src, Mapping) and _name(src.get("name")):
                    refs.append(Reference(kind, src["name"], False, f"envFrom of container {cname}"))
        for env in _dicts(c.get("env")):
            value_from = env.get("valueFrom")
            if not isinstance(value_from, Mapping):
                continue
            for key, kind in (("configMapKeyRef", CONFIGMAP), ("secretKeyRef", SECRET)):
                src = value_from.get(key)
                if isinstance(src, Mapping) and _name(src.get("name")):
                    refs.append(Reference(kind, src["name"], False,
                                          f"env {_name(env.get('name'))} of container {cname}"))
    return refs


def escape_hatches(spec: Any, *, safe_capabilities: frozenset[str] = DEFAULT_SAFE_CAPABILITIES,
                   allowed_schedulers: frozenset[str] = frozenset({"default-scheduler"})) -> list[Hatch]:
    """The pod settings that reach the node or skip the scheduler, one Hatch each."""
    if not isinstance(spec, Mapping):
        return []
    found: list[Hatch] = []
    host_paths = sorted({_name(v.get("hostPath", {}).get("path")) or "?"
                         for v in _dicts(spec.get("volumes")) if isinstance(v.get("hostPath"), Mapping)})
    if host_paths:
        found.append(Hatch("hostPath", f"mounts host path {', '.join(host_paths)}"))
    for flag in ("hostPID", "hostIPC", "hostNetwork"):
        if spec.get(flag) is True:
            found.append(Hatch(flag, f"sets {flag}: true"))
    privileged, added = [], set()
    for c in _containers(spec):
        ctx = c.get("securityContext")
        if not isinstance(ctx, Mapping):
            continue
        if ctx.get("privileged") is True:
            privileged.append(_name(c.get("name")))
        caps = ctx.get("capabilities")
        if isinstance(caps, Mapping) and isinstance(caps.get("add"), list):
            added |= {str(a).upper().removeprefix("CAP_") for a in caps["add"]} - safe_capabilities
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
    return found
