"""Which pod the kubelet allocated each GPU to, from its pod-resources `List` answer.

The kubelet's `v1.PodResourcesLister/List` (a gRPC service on
`/var/lib/kubelet/pod-resources/kubelet.sock`) answers a protobuf `ListPodResourcesResponse`:

    ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
    PodResources             { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; }
    ContainerResources       { string name = 1; repeated ContainerDevices devices = 2; ... }
    ContainerDevices         { string resource_name = 1; repeated string device_ids = 2; ... }

It is decoded here from the wire format (varints and length-delimited fields; fields this
reader does not need are skipped), so no generated code is needed. The NVIDIA device plugin's
device IDs are the GPUs' (or MIG devices') UUIDs; a shared GPU (time-slicing) appears as
`<uuid>::<replica>`, and counts for the GPU itself.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from gateway.telemetry.samples import PodRef

#: Extended resources whose devices are NVIDIA GPUs or MIG slices.
GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/mig-*")


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of one message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > len(buf):
                raise ValueError("a length-delimited field runs past the end")
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if i + size > len(buf):
                raise ValueError("a fixed-size field runs past the end")
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")
        yield number, value


def _text(value: bytes | int) -> str:
    if not isinstance(value, bytes):
        raise ValueError("expected a string field")
    return value.decode("utf-8")


def gpu_allocations(response: bytes, resources: tuple[str, ...] = GPU_RESOURCES) -> dict[str, PodRef]:
    """GPU (or MIG) UUID -> the pod it is allocated to. Raises ValueError on a malformed answer."""
    out: dict[str, PodRef] = {}
    for number, pod_raw in fields(response):
        if number != 1 or not isinstance(pod_raw, bytes):
            continue
        name = namespace = ""
        devices: list[str] = []
        for f, value in fields(pod_raw):
            if f == 1:
                name = _text(value)
            elif f == 2:
                namespace = _text(value)
            elif f == 3 and isinstance(value, bytes):
                devices += _container_gpus(value, resources)
        for device in devices:
            out[device.split("::", 1)[0]] = PodRef(namespace, name)
    return out


def _container_gpus(container: bytes, resources: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for f, value in fields(container):
        if f != 2 or not isinstance(value, bytes):
            continue
        resource, ids = "", []
        for g, item in fields(value):
            if g == 1:
                resource = _text(item)
            elif g == 2:
                ids.append(_text(item))
        if any(fnmatch.fnmatchcase(resource, pattern) for pattern in resources):
            found += ids
    return found
