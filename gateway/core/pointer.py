"""JSON Pointers (RFC 6901) into decoded Kubernetes objects: the one place they are built and read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def tokens(pointer: str) -> list[str]:
    if not pointer:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def resolve(obj: Any, pointer: str) -> Any:
    """The value at `pointer`, following object keys and list indices; None where absent."""
    node = obj
    for token in tokens(pointer):
        if isinstance(node, Mapping):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def annotations_at(obj: Any, pointer: str = "") -> Mapping[str, Any]:
    """`metadata.annotations` of the object at `pointer` (a workload or a pod template)."""
    node = resolve(obj, pointer)
    meta = node.get("metadata") if isinstance(node, Mapping) else None
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    return ann if isinstance(ann, Mapping) else {}
