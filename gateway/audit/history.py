"""What an UPDATE changed, for the audit log: a small structured diff that never holds a secret.

`changes(group, kind, old, new, digest=...)` compares the old and the new object of an
UPDATE and lists what changed, one flat dict per change:

    {"field": F, "change": "added" | "removed" | "changed",
     "template": T, "container": C, "key": K,      # only those that apply
     "old": ..., "new": ...}                        # only those that are recorded

- `template` names a pod template by its pod-set name (`Worker`, `main`, `pod`; the field
  path where two templates share a name), `container` a container of it, and `key` the item
  within the field (variable name, resource, mount path, volume name, label key, data key,
  field path of a count).
- `old` and `new` are strings or integers, absent for the side that does not exist and
  wherever the value is not recorded. Long values are cut at `MAX_SHOWN` characters.

Fields, by kind of object:

    any object       label, annotation: keys only, never values (kubectl's
                     last-applied-configuration annotation is left out: it repeats the spec)
    workloads        count: every replica-like integer (`spec.replicas`, Kubeflow
                     replica specs, JobSet replicatedJobs, Ray groups, ...), key = its path;
                     a `/scale` request's Scale object is a workload with one count
    pod templates    template (added or removed); label and annotation of the template;
                     container (added or removed; old/new: its image); image, command, args;
                     env (key: the variable; old/new: its source, never its value:
                     `literal`, `secret NAME/KEY`, `configMap NAME/KEY`, `field PATH`,
                     `resource NAME`); envFrom (key: `secret NAME` or `configMap NAME`);
                     resources (key: `limits.nvidia.com/gpu`, `requests.cpu`, ...);
                     volumeMount (key: the mount path; old/new: the volume); volume (key: its
                     name; old/new: its source, e.g. `persistentVolumeClaim data`,
                     `secret creds`, `hostPath /var/run`); pod settings in `POD_SETTINGS`
    ConfigMap        data, binaryData: per key, old/new = `digest(bytes)`; immutable
    Secret           data (stringData folded in, as the API server does): per key,
                     old/new = `digest(decoded bytes)`; type, immutable
    PVC              resources (key: `requests.storage`, ...), accessModes,
                     storageClassName, volumeName, volumeMode

More than `MAX_CHANGES` changes are cut, ending with {"field": "more", "change": "changed",
"new": <how many were left out>}. Parts of an object that cannot be read are skipped; the only
error raised is a WorkloadError for values nested too deeply to compare. `digest` is keyed
(see `keyed_digest`), so a digest in the audit log does not let anyone guess a weak secret
offline.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from gateway.admission.pointer import resolve, tokens
from gateway.admission.workloads import GpuMatcher, read_workload
from gateway.errors import RequestError, WorkloadError

Change = dict[str, Any]
Digest = Callable[[bytes], str]

MAX_CHANGES = 200
MAX_SHOWN = 200

#: Pod spec settings worth recording when they change (who runs it, where, with what privileges).
POD_SETTINGS = ("serviceAccountName", "priorityClassName", "schedulerName", "runtimeClassName",
                "nodeName", "hostNetwork", "hostPID", "hostIPC")

#: Integer fields that say how many pods (or groups of pods) a workload runs.
COUNT_FIELDS = frozenset({"replicas", "parallelism", "completions", "minReplicas", "maxReplicas",
                          "numNodes", "numOfHosts", "size", "minAvailable"})

_IGNORED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
_PVC_SETTINGS = ("accessModes", "storageClassName", "volumeName", "volumeMode")
_MAX_DEPTH = 32
_INT64 = (-(2**63), 2**63 - 1)

#: Templates are found with the core's own workload readers; no resource is a GPU here, so
#: no quantity is ever parsed (a diff needs where the templates are, not what they ask for).
_NO_GPUS = GpuMatcher(())

_MISSING: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class KeyedDigest:
    """HMAC-SHA256 under `key`, first 16 hex digits: comparable within one installation only."""

    key: bytes = dataclasses.field(repr=False)

    def __call__(self, data: bytes) -> str:
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()[:16]


def keyed_digest(key: bytes) -> KeyedDigest:
    """The installation's `Digest` under `key` (at least 16 bytes)."""
    if len(key) < 16:
        raise ValueError("a digest key needs at least 16 bytes")
    return KeyedDigest(key)


def changes(
    kind_group: str, kind: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, digest: Digest
) -> list[Change]:
    """What changed from `old` to `new` (an object of API group `kind_group` and `kind`).

    [] when either side is missing or not an object: only an UPDATE has a diff.
    """
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return []
    try:
        found = _metadata(old, new, {}) + _spec_changes(kind_group, kind, old, new, digest)
    except RecursionError as exc:  # comparing values nested deeper than Python recurses
        raise WorkloadError("the object is nested too deeply to compare") from exc
    if len(found) > MAX_CHANGES:
        left_out = len(found) - MAX_CHANGES + 1
        found = [*found[: MAX_CHANGES - 1], {"field": "more", "change": "changed", "new": left_out}]
    return found


def _spec_changes(
    group: str, kind: str, old: Mapping[str, Any], new: Mapping[str, Any], digest: Digest
) -> list[Change]:
    if (group, kind) == ("", "Secret"):
        return _secret(old, new, digest)
    if (group, kind) == ("", "ConfigMap"):
        return _configmap(old, new, digest)
    if (group, kind) == ("", "PersistentVolumeClaim"):
        return _pvc(old, new)
    return _workload(group, kind, old, new)


# ---------------------------------------------------------------- building blocks


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _show(value: Any) -> str | int | None:
    """A value as the audit log records it: integers as they are, anything else as short text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Beyond 64 bits JSON encoders, the audit log's among them, refuse a number.
        return value if _INT64[0] <= value <= _INT64[1] else f"(an integer of {value.bit_length()} bits)"
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = shlex.join(value)
    else:
        text = _json(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _json(value: Any) -> str:
    """Compact JSON of a decoded value; a placeholder for what JSON cannot hold (a huge integer,
    nesting deeper than the encoder goes)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return "(a value that cannot be shown)"


def _entry(field: str, old: Any, new: Any, where: Mapping[str, str], shown: Callable[[Any], Any] | None) -> Change:
    """One change; `old`/`new` are _MISSING for a side that does not exist."""
    how = "added" if old is _MISSING else "removed" if new is _MISSING else "changed"
    change: Change = {"field": field, "change": how, **where}
    if shown is not None:
        for side, value in (("old", old), ("new", new)):
            if value is not _MISSING and (text := shown(value)) is not None:
                change[side] = text
    return change


def _scalar(
    field: str, old: Mapping[str, Any], new: Mapping[str, Any], where: Mapping[str, str],
    shown: Callable[[Any], Any] = _show,
) -> list[Change]:
    """`field` of two mappings, when it differs."""
    before, after = old.get(field, _MISSING), new.get(field, _MISSING)
    return [] if before == after else [_entry(field, before, after, where, shown)]


def _keyed(
    field: str, old: Mapping[str, Any], new: Mapping[str, Any], where: Mapping[str, str],
    shown: Callable[[Any], Any] | None = _show,
) -> list[Change]:
    """Items of two mappings added, removed or changed, in the order they appear."""
    out = []
    for key in _union(old, new):
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if before != after:
            out.append(_entry(field, before, after, {**where, "key": str(key)}, shown))
    return out


def _union(*mappings: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(key for m in mappings for key in m))


# ---------------------------------------------------------------- metadata and counts


def _metadata(old: Mapping[str, Any], new: Mapping[str, Any], where: Mapping[str, str]) -> list[Change]:
    """Label and annotation keys that were added, removed or changed (values are not recorded)."""
    out = []
    for field, section in (("label", "labels"), ("annotation", "annotations")):
        before = _obj(_obj(old.get("metadata")).get(section))
        after = _obj(_obj(new.get("metadata")).get(section))
        out += [c for c in _keyed(field, before, after, where, shown=None) if c["key"] not in _IGNORED_ANNOTATIONS]
    return out


def _counts(obj: Mapping[str, Any]) -> dict[str, int]:
    """Every replica-like integer under `spec`, by field path (`spec.pytorchReplicaSpecs.Worker.replicas`).

    List items are named by their `name` (or Ray's `groupName`) where they have one, so a
    count keeps its path when items are reordered. Pod specs are not entered: they hold none.
    """
    found: dict[str, int] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        if isinstance(node, list):
            for i, item in enumerate(node):
                label = _obj(item).get("name") or _obj(item).get("groupName") or i
                walk(item, f"{path}[{label}]", depth + 1)
            return
        if not isinstance(node, Mapping) or isinstance(node.get("containers"), list):
            return
        for key, value in node.items():
            if key in COUNT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
                found[f"{path}.{key}"] = value
            else:
                walk(value, f"{path}.{key}", depth + 1)

    walk(obj.get("spec"), "spec", 0)
    return found


# ---------------------------------------------------------------- workloads and pod templates


def _workload(group: str, kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = _keyed("count", _counts(old), _counts(new), {})
    before, after = _templates(old, group, kind), _templates(new, group, kind)
    if before is None or after is None:
        return out  # one side's templates cannot be located: none can be compared
    names = _template_names({**before, **after})
    for path in _union(before, after):
        where = {"template": names[path]}
        if path not in before or path not in after:
            out.append(_entry("template", before.get(path, _MISSING), after.get(path, _MISSING), where, None))
        else:
            out += _pod_template(before[path][1], after[path][1], where, own_metadata=path != "")
    return out


def _templates(obj: Mapping[str, Any], group: str, kind: str) -> dict[str, tuple[str, Mapping[str, Any]]] | None:
    """Pod templates by JSON pointer: (pod-set name, template); None where the core cannot read
    the object. A bare Pod is its own template (pointer "")."""
    try:
        workload = read_workload(obj, group, kind, _NO_GPUS)
    except RequestError:
        return None
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for pod_set in workload.pod_sets:
        path = pod_set.template_path
        if path is None or path in found:
            continue
        node = resolve(obj, path) if path else obj
        if isinstance(node, Mapping):
            found[path] = (pod_set.name, node)
    return found


def _template_names(templates: Mapping[str, tuple[str, Any]]) -> dict[str, str]:
    """Pod-set name of each template; its field path where several templates share a name."""
    seen: dict[str, int] = {}
    for name, _ in templates.values():
        seen[name] = seen.get(name, 0) + 1
    return {
        path: name if seen[name] == 1 else ".".join(tokens(path))
        for path, (name, _) in templates.items()
    }


def _pod_template(
    old: Mapping[str, Any], new: Mapping[str, Any], where: Mapping[str, str], *, own_metadata: bool
) -> list[Change]:
    out = _metadata(old, new, where) if own_metadata else []
    before, after = _obj(old.get("spec")), _obj(new.get("spec"))
    for setting in POD_SETTINGS:
        out += _scalar(setting, before, after, where)
    out += _keyed("volume", _by_name(before.get("volumes")), _by_name(after.get("volumes")), where,
                  shown=_volume_source)
    out += _containers(before, after, where)
    return out


def _by_name(items: Any, prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Named list items (volumes, containers, env) by name; unnamed ones by position. Last wins."""
    found: dict[str, Mapping[str, Any]] = {}
    for i, item in enumerate(_list(items)):
        if isinstance(item, Mapping):
            name = item.get("name")
            found[name if isinstance(name, str) and name else f"{prefix}[{i}]"] = item
    return found


def _containers(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any], where: Mapping[str, str]) -> list[Change]:
    def containers(spec: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        return {**_by_name(spec.get("initContainers"), "initContainers"),
                **_by_name(spec.get("containers"), "containers")}

    before, after = containers(old_spec), containers(new_spec)
    out = []
    for name in _union(before, after):
        here = {**where, "container": name}
        if name not in before or name not in after:
            out.append(_entry("container", before.get(name, _MISSING), after.get(name, _MISSING), here,
                              shown=lambda c: _show(_obj(c).get("image"))))
        elif before[name] != after[name]:
            out += _container(before[name], after[name], here)
    return out


def _container(old: Mapping[str, Any], new: Mapping[str, Any], where: Mapping[str, str]) -> list[Change]:
    out = []
    for field in ("image", "command", "args"):
        out += _scalar(field, old, new, where)
    out += _keyed("env", _by_name(old.get("env"), "env"), _by_name(new.get("env"), "env"), where,
                  shown=_env_source)
    out += _keyed("envFrom", _env_from(old), _env_from(new), where, shown=None)
    out += _keyed("resources", _resources(old), _resources(new), where)
    out += _keyed("volumeMount", _mounts(old), _mounts(new), where)
    return out


def _env_source(var: Any) -> str:
    """Where a variable's value comes from; a literal value itself is never recorded."""
    source = _obj(_obj(var).get("valueFrom"))
    if not source:
        return "literal"
    for ref, label in (("secretKeyRef", "secret"), ("configMapKeyRef", "configMap")):
        if ref in source:
            selector = _obj(source[ref])
            return f"{label} {selector.get('name', '')}/{selector.get('key', '')}"
    if "fieldRef" in source:
        return f"field {_obj(source['fieldRef']).get('fieldPath', '')}"
    if "resourceFieldRef" in source:
        return f"resource {_obj(source['resourceFieldRef']).get('resource', '')}"
    return "valueFrom"


def _env_from(container: Mapping[str, Any]) -> dict[str, bool]:
    found = {}
    for item in _list(container.get("envFrom")):
        item = _obj(item)
        for ref, label in (("secretRef", "secret"), ("configMapRef", "configMap")):
            if ref in item:
                prefix = item.get("prefix")
                found[f"{label} {_obj(item[ref]).get('name', '')}" + (f" prefix {prefix}" if prefix else "")] = True
    return found


def _resources(holder: Mapping[str, Any]) -> dict[str, Any]:
    """`requests.cpu`, `limits.nvidia.com/gpu`, ... → quantity."""
    resources = _obj(holder.get("resources"))
    return {f"{section}.{name}": qty for section in ("requests", "limits")
            for name, qty in _obj(resources.get(section)).items()}


def _mounts(container: Mapping[str, Any]) -> dict[str, str]:
    """Mount path → the volume mounted there (with its subPath and read-only flag)."""
    found = {}
    for mount in _list(container.get("volumeMounts")):
        mount = _obj(mount)
        path = mount.get("mountPath")
        if isinstance(path, str):
            sub_path = f" subPath {mount['subPath']}" if mount.get("subPath") else ""
            read_only = " (read-only)" if mount.get("readOnly") is True else ""
            found[path] = f"{mount.get('name', '')}{sub_path}{read_only}"
    return found


#: Where each kind of volume points: the field that names its source.
_VOLUME_REFS = {"persistentVolumeClaim": "claimName", "configMap": "name", "secret": "secretName",
                "hostPath": "path", "nfs": "path", "csi": "driver", "image": "reference"}


def _volume_source(volume: Any) -> str | int | None:
    """`persistentVolumeClaim data`, `secret creds`, `hostPath /var/run`, `emptyDir`, `projected secret a, ...`."""
    volume = _obj(volume)
    for kind, spec in volume.items():
        if kind == "name":
            continue
        if kind == "projected":
            return _show("projected " + ", ".join(_projection(p) for p in _list(_obj(spec).get("sources"))))
        ref = _obj(spec).get(_VOLUME_REFS.get(kind, ""))
        return _show(f"{kind} {ref}" if isinstance(ref, str) else kind)
    return None


def _projection(source: Any) -> str:
    for kind, spec in _obj(source).items():
        name = _obj(spec).get("name")
        return f"{kind} {name}" if isinstance(name, str) else str(kind)
    return "?"


# ---------------------------------------------------------------- ConfigMaps, Secrets, PVCs


def _bytes(value: Any) -> bytes:
    """A string's UTF-8 bytes (any other value's JSON): what a digest is taken of."""
    return (value if isinstance(value, str) else _json(value)).encode(errors="surrogatepass")


def _text(section: Any) -> dict[str, bytes]:
    """`data` / `stringData` values as bytes."""
    return {str(k): _bytes(v) for k, v in _obj(section).items()}


def _decoded(section: Any) -> dict[str, bytes]:
    """`binaryData` / Secret `data` values: base64, decoded. A value that is not base64 is
    hashed as it stands, so that its change is still seen."""
    out = {}
    for key, value in _obj(section).items():
        raw = _bytes(value)
        try:
            out[str(key)] = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            out[str(key)] = raw
    return out


def _configmap(old: Mapping[str, Any], new: Mapping[str, Any], digest: Digest) -> list[Change]:
    return [
        *_keyed("data", _text(old.get("data")), _text(new.get("data")), {}, shown=digest),
        *_keyed("binaryData", _decoded(old.get("binaryData")), _decoded(new.get("binaryData")), {}, shown=digest),
        *_scalar("immutable", old, new, {}),
    ]


def _secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's contents: `data` decoded, overridden by `stringData` (write-only sugar for it)."""
    return {**_decoded(secret.get("data")), **_text(secret.get("stringData"))}


def _secret(old: Mapping[str, Any], new: Mapping[str, Any], digest: Digest) -> list[Change]:
    return [
        *_keyed("data", _secret_data(old), _secret_data(new), {}, shown=digest),
        *_scalar("type", old, new, {}),
        *_scalar("immutable", old, new, {}),
    ]


def _pvc(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    before, after = _obj(old.get("spec")), _obj(new.get("spec"))
    out = _keyed("resources", _resources(before), _resources(after), {})
    for setting in _PVC_SETTINGS:
        out += _scalar(setting, before, after, {})
    return out

