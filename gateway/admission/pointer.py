"""JSON Pointers (RFC 6901) into decoded Kubernetes objects: the one place they are built and read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

#: JSON's other types: never mappings, so `is_object` answers for them without the ABC check.
_NOT_OBJECTS = frozenset({type(None), str, list, int, float, bool})


def is_object(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """Whether a decoded JSON value is an object (a mapping).

    Decoded JSON is plain dicts, absent fields None: `type(value)` answers for them about ten
    times cheaper than the ABC check `isinstance(value, Mapping)`, which a decision would
    otherwise run dozens of times; other mappings still take the general path.
    """
    kind = type(value)
    return kind is dict or (kind not in _NOT_OBJECTS and isinstance(value, Mapping))


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def tokens(pointer: str) -> list[str]:
    if not pointer:
        return []
    parts = pointer.split("/")[1:]
    if "~" not in pointer:  # nothing escaped, as in every template path of the known kinds
        return parts
    return [t.replace("~1", "/").replace("~0", "~") for t in parts]


def resolve(obj: Any, pointer: str) -> Any:
    """The value at `pointer`, following object keys and list indices; None where absent."""
    node = obj
    for token in tokens(pointer):
        if type(node) is dict or is_object(node):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def annotations_at(obj: Any, pointer: str = "") -> Mapping[str, Any]:
    """`metadata.annotations` of the object at `pointer` (a workload or a pod template)."""
    return _metadata(resolve(obj, pointer) if pointer else obj, "annotations")


def labels_at(obj: Any, pointer: str = "") -> Mapping[str, Any]:
    """`metadata.labels` of the object at `pointer` (a workload or a pod template)."""
    return _metadata(resolve(obj, pointer) if pointer else obj, "labels")


def _metadata(node: Any, key: str) -> Mapping[str, Any]:
    """`metadata.<key>` of `node` when it is an object, else an empty mapping."""
    meta = node.get("metadata") if type(node) is dict or is_object(node) else None
    value = meta.get(key) if type(meta) is dict or is_object(meta) else None
    return value if type(value) is dict or is_object(value) else {}
