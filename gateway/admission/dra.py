"""Dynamic Resource Allocation (DRA): the GPUs ResourceClaims and ResourceClaimTemplates ask
for, and the claims a pod references. Pure.

A pod reaches DRA devices through `spec.resourceClaims[]`: by `resourceClaimName`, a claim
that every pod naming it shares, or by `resourceClaimTemplateName`, from which the
resourceclaim controller makes one claim per pod. A claim asks for devices in
`spec.devices.requests[]` (a template: `spec.spec.devices.requests[]`); in `resource.k8s.io/v1`
a request is `exactly: {deviceClassName, allocationMode, count}` or `firstAvailable: [...]`
alternatives (the scheduler takes the first that fits), and in v1beta1 the fields sit on the
request itself. A request counts as GPUs when its device class matches limits.yaml
`dra.gpu_device_classes`: `count` devices (default 1), or `dra.all_devices_count` for
`allocationMode: All` (every matching device on a node: the worst case the policy states),
and the largest GPU alternative of `firstAvailable`. What cannot be read counts as the worst
case, never as 0.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

from gateway.admission.pointer import is_object
from gateway.admission.quantity import MAX_GPUS

GROUP = "resource.k8s.io"
CLAIM = "ResourceClaim"
TEMPLATE = "ResourceClaimTemplate"

#: The ledger's resource key of each kind (`resource.group`, as admission requests name it).
RESOURCE_KEYS = {CLAIM: f"resourceclaims.{GROUP}", TEMPLATE: f"resourceclaimtemplates.{GROUP}"}

#: Device classes of whole GPUs and MIG slices as the vendors' DRA drivers install them.
#: NVIDIA's ComputeDomain classes (`compute-domain-*.nvidia.com`, IMEX channels) are not GPUs.
DEFAULT_GPU_DEVICE_CLASSES = ("gpu.nvidia.com", "mig.nvidia.com", "gpu.amd.com", "gpu.intel.com")

#: What `allocationMode: All` counts as when limits.yaml does not say: a full 8-GPU node.
DEFAULT_ALL_DEVICES_COUNT = 8

#: The annotation the resourceclaim controller puts on a claim it makes from a template: the
#: name of the pod's `spec.resourceClaims[]` entry it was made for.
POD_CLAIM_ANNOTATION = "resource.kubernetes.io/pod-claim-name"


def is_claim_kind(group: str, kind: str) -> bool:
    return group == GROUP and kind in RESOURCE_KEYS


@dataclass(frozen=True, slots=True)
class DraPolicy:
    """limits.yaml `dra`: which DRA device classes are GPUs, and what `All` counts as."""

    gpu_device_classes: tuple[str, ...] = DEFAULT_GPU_DEVICE_CLASSES
    """Shell-style patterns of the DeviceClass names whose devices are GPUs."""
    all_devices_count: int = DEFAULT_ALL_DEVICES_COUNT
    """GPUs a request with `allocationMode: All` (or a count that cannot be read) counts as."""

    def is_gpu_class(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.gpu_device_classes)


@dataclass(frozen=True, slots=True)
class PodClaim:
    """One `spec.resourceClaims[]` entry of a pod: the claim or template it names."""

    name: str
    """The entry's name in the pod (what containers' `resources.claims` use)."""
    kind: str
    """`ResourceClaim` (shared by every pod naming it) or `ResourceClaimTemplate` (one claim per pod)."""
    ref: str
    """The name of the claim or template, in the pod's namespace."""
    gpus: int | None = None
    """GPUs the ledger recorded for it, filled in when a decision counts them (None: not counted)."""

    @property
    def shared(self) -> bool:
        return self.kind == CLAIM


def pod_claims(spec: Any) -> tuple[PodClaim, ...]:
    """The claims a pod spec references, in order. Entries naming both a claim and a template
    (which the API server refuses) count as both; the pre-1.31 `source:` form is read too."""
    entries = spec.get("resourceClaims") if is_object(spec) else None
    if not isinstance(entries, list):
        return ()
    found: list[PodClaim] = []
    for entry in entries:
        if not is_object(entry):
            continue
        source = entry.get("source")
        where = source if is_object(source) else entry
        name = entry.get("name")
        label = name if isinstance(name, str) else ""
        for field, kind in (("resourceClaimTemplateName", TEMPLATE), ("resourceClaimName", CLAIM)):
            ref = where.get(field)
            if isinstance(ref, str) and ref:
                found.append(PodClaim(label, kind, ref))
    return tuple(found)


def claim_key(namespace: str, claim: PodClaim) -> tuple[str, str, str]:
    """The ledger key of the claim or template a pod names."""
    return (RESOURCE_KEYS[claim.kind], namespace, claim.ref)


# ---------------------------------------------------------------- what a claim asks for


def object_gpus(kind: str, obj: Any, dra: DraPolicy) -> int:
    """GPUs one claim made from this ResourceClaim or ResourceClaimTemplate object asks for."""
    spec = obj.get("spec") if is_object(obj) else None
    if kind == TEMPLATE:
        spec = spec.get("spec") if is_object(spec) else None
    return claim_gpus(spec, dra)


def claim_gpus(spec: Any, dra: DraPolicy) -> int:
    """GPUs a ResourceClaim spec (`{devices: {requests: [...]}}`) asks for, at most MAX_GPUS.

    Never raises, whatever the JSON: what it cannot read counts as the worst case.
    """
    devices = spec.get("devices") if is_object(spec) else None
    requests = devices.get("requests") if is_object(devices) else None
    if not isinstance(requests, list):
        return 0
    total = 0
    for request in requests:
        total += _request_gpus(request, dra)
        if total >= MAX_GPUS:
            return MAX_GPUS
    return total


def _request_gpus(request: Any, dra: DraPolicy) -> int:
    """One request: `exactly` (v1, v1beta2), `firstAvailable` (its largest GPU alternative) or
    the v1beta1 fields on the request itself. Where several are set (the API server refuses
    that), each counts. A request in none of those shapes counts as the worst case."""
    if not is_object(request):
        return 0
    total, readable = 0, False
    exactly = request.get("exactly")
    if is_object(exactly):
        total, readable = total + _devices(exactly, dra), True
    alternatives = request.get("firstAvailable")
    if isinstance(alternatives, list):
        total += max((_devices(a, dra) for a in alternatives if is_object(a)), default=0)
        readable = True
    if "deviceClassName" in request:
        total, readable = total + _devices(request, dra), True
    return total if readable else dra.all_devices_count


def _devices(request: Any, dra: DraPolicy) -> int:
    """Devices of one exact request, if its class is a GPU class."""
    name = request.get("deviceClassName")
    if not isinstance(name, str) or not dra.is_gpu_class(name):
        return 0
    count = request.get("count")
    if count is None:
        n = 1
    elif isinstance(count, int) and not isinstance(count, bool):
        n = min(max(count, 0), MAX_GPUS)
    else:
        return max(dra.all_devices_count, 1)  # a count the API server would refuse: the worst case
    mode = request.get("allocationMode", "ExactCount")
    if mode != "ExactCount":  # All, or a mode this gateway does not know
        return max(n, dra.all_devices_count)
    return n


# ---------------------------------------------------------------- the ledger's record


def claim_shape(gpus: int, *, shareable: bool = False) -> str:
    """What the ledger keeps of a claim or template: an owned object, and the GPUs one claim
    from it asks for (read when a workload referencing it is decided)."""
    return json.dumps({"data": True, "shareable": shareable, "dra_gpus": gpus}, separators=(",", ":"))


def recorded_gpus(shape: str) -> int | None:
    """The GPUs a claim's ledger record holds, or None when the record says none."""
    try:
        data = json.loads(shape or "{}")
    except ValueError:
        return None
    value = data.get("dra_gpus") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def counted_claims(shape: str, path: str) -> dict[str, int] | None:
    """GPUs a pod's record was counted for, per `spec.resourceClaims[]` entry of its template
    claims (the pod set at `path`: "" for a pod), or None when the record keeps none."""
    try:
        data = json.loads(shape or "{}")
    except ValueError:
        return None
    claims = data.get("claims") if isinstance(data, dict) else None
    entry = claims.get(path) if isinstance(claims, dict) else None
    if not isinstance(entry, dict):
        return None
    return {str(k): v for k, v in entry.items()
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
