"""Protobuf encoding of the kubelet's ListPodResourcesResponse, for tests (the kubelet's side)."""

from __future__ import annotations


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, text: str) -> bytes:
    return _field(number, text.encode())


def list_response(pods: list[tuple[str, str, list[tuple[str, list[tuple[str, list[str]]]]]]]) -> bytes:
    """pods: (namespace, name, [(container, [(resource, [device ids])])]); adds the fields a real
    kubelet sends that the reader skips (cpu_ids, topology)."""
    out = b""
    for namespace, name, containers in pods:
        body = _text(1, name) + _text(2, namespace)
        for container, devices in containers:
            c = _text(1, container)
            for resource, ids in devices:
                topology = _field(3, _field(1, _varint(1 << 3 | 0) + _varint(0)))
                c += _field(2, _text(1, resource) + b"".join(_text(2, i) for i in ids) + topology)
            c += _varint(3 << 3 | 0) + _varint(7)  # cpu_ids = 7
            body += _field(3, c)
        out += _field(1, body)
    return out
