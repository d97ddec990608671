"""Fuzz cases: a real fixture in an AdmissionReview, mutated by a seeded random generator.

One integer (the case number) determines a case completely, so a failure is reproduced
with `python3 -m fuzz --replay N`.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

#: Who sends the review: (username, groups).
IDENTITIES: tuple[tuple[str, list[str]], ...] = (
    ("bob", ["gpu-researchers", "team:vision"]),
    ("alice", ["gpu-interns", "team:vision"]),
    ("root", ["gpu-admins"]),
    ("mallory", []),
    ("system:serviceaccount:kube-system:job-controller", ["system:serviceaccounts"]),
)

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.5gb", "gpu.intel.com/i915")

#: Values a GPU quantity must never be read as a count from: the object is unreadable.
BAD_QUANTITIES: tuple[Any, ...] = (
    -8, "-8", 0.5, "0.5", "8.5", "abc", "", True, [], {}, [8], {"n": 8}, 10**40, "1e400",
    "9" * 400, "8000001m", "-1k", "1.5", "2.5k3", "8 ", " 8", "\uff18", "8_0",
)

#: Replacements for any value: types, sizes, nulls, unicode, huge numbers.
WILD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, "", " ", "0",
    "-1", "1e3", "0x10", "NaN", "Infinity", "\x00", "\u202e", "💥" * 3, "é" * 50, "a" * 5000,
    [], {}, [None], {"": None}, ["a", 1, None], {"kind": "Pod"}, {"nvidia.com/gpu": "8"},
)

CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
                 "text/plain", "application/x-www-form-urlencoded", "", "application/merge-patch+json",
                 "application/yaml", "JSON")


@dataclass
class Case:
    number: int
    endpoint: str
    content_type: str | None
    body: bytes
    mutations: list[str] = field(default_factory=list)
    must_deny: str = ""
    """Set when the case is built to be unreadable for a GPU-capable object: why."""

    def describe(self) -> str:
        shown = self.body[:2000].decode("utf-8", "backslashreplace")
        more = f" ... ({len(self.body)} bytes)" if len(self.body) > 2000 else ""
        return (f"case {self.number}: POST {self.endpoint} content-type={self.content_type!r} "
                f"mutations={self.mutations}\n  body: {shown}{more}")


@cache
def seeds() -> tuple[dict[str, Any], ...]:
    """Every manifest in tests/fixtures, as users submit them."""
    out: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix == ".json":
            out.append(json.loads(path.read_text()))
        elif path.suffix in (".yaml", ".yml"):
            out.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return tuple(out)


def review_of(obj: dict[str, Any], rng: random.Random, uid: str) -> dict[str, Any]:
    """An AdmissionReview v1 of `obj` by a random identity, as the API server sends it."""
    group, _, version = str(obj.get("apiVersion", "v1")).rpartition("/")
    kind = str(obj.get("kind", "Pod"))
    meta = obj.get("metadata") or {}
    user, groups = rng.choice(IDENTITIES)
    operation = rng.choice(("CREATE", "CREATE", "CREATE", "UPDATE", "DELETE"))
    req: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "namespace": meta.get("namespace", "research"),
        "name": meta.get("name", ""),
        "operation": operation,
        "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]},
        "dryRun": rng.random() < 0.1,
    }
    if operation != "DELETE":
        req["object"] = obj
    if operation != "CREATE":
        req["oldObject"] = copy.deepcopy(obj)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


# ------------------------------------------------------------------ walking JSON


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


#: Mutations pick among at most this many nodes (a grown body has millions).
_WALK = 20_000


def _some_paths(body: Any) -> list[tuple[Any, ...]]:
    return list(islice(_paths(body), _WALK))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def gpu_quantity_paths(obj: Any) -> list[tuple[Any, ...]]:
    """Paths of the GPU quantities under `resources.limits/requests` of containers."""
    return [p for p in _paths(obj) if len(p) >= 3 and p[-3] == "resources" and p[-2] in ("limits", "requests")
            and isinstance(p[-1], str) and p[-1] in GPU_RESOURCES]


# ------------------------------------------------------------------ mutations


def _mutate_value(rng: random.Random, body: Any, log: list[str]) -> Any:
    path = rng.choice(_some_paths(body))
    value = rng.choice(WILD_VALUES)
    log.append(f"set {'/'.join(map(str, path))} = {value!r:.40}")
    return _set(body, path, copy.deepcopy(value))


def _delete_key(rng: random.Random, body: Any, log: list[str]) -> Any:
    paths = [p for p in _some_paths(body) if p and isinstance(_get(body, p[:-1]), dict)]
    if paths:
        path = rng.choice(paths)
        del _get(body, path[:-1])[path[-1]]
        log.append(f"delete {'/'.join(map(str, path))}")
    return body


def _nest(rng: random.Random, body: Any, log: list[str]) -> Any:
    path = rng.choice(_some_paths(body))
    depth = rng.choice((2, 10, 100, 600, 1100, 5000))
    value: Any = _get(body, path)
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"x": value}
    log.append(f"nest {'/'.join(map(str, path))} {depth} deep")
    return _set(body, path, value)


def _grow(rng: random.Random, body: Any, log: list[str]) -> Any:
    paths = [p for p in _some_paths(body) if isinstance(_get(body, p), list | dict)]
    path = rng.choice(paths) if paths else ()
    node = _get(body, path)
    grown = any(m.startswith("grow") for m in log)
    n = 10 if grown else rng.choice((10, 100, 2000))  # twice 2,000 is only a bigger 413
    if isinstance(node, list):
        node.extend(copy.deepcopy(node[:1]) * n if node else [0] * n)
    elif isinstance(node, dict):
        for i in range(n):
            node[f"k{i}"] = i
    log.append(f"grow {'/'.join(map(str, path))} by {n}")
    return body


def _unicode_keys(rng: random.Random, body: Any, log: list[str]) -> Any:
    paths = [p for p in _some_paths(body) if p and isinstance(_get(body, p[:-1]), dict)]
    if paths:
        path = rng.choice(paths)
        parent = _get(body, path[:-1])
        parent[rng.choice(("\u0000", "ü", "\ud7ff", "名前", "\u200b" + str(path[-1]), str(path[-1]).upper()))] = (
            parent.pop(path[-1]))
        log.append(f"rename key {'/'.join(map(str, path))}")
    return body


_STRUCTURAL = (_mutate_value, _mutate_value, _delete_key, _nest, _grow, _unicode_keys)


def _encode(rng: random.Random, body: Any, log: list[str]) -> bytes:
    text = json.dumps(body, ensure_ascii=rng.random() < 0.3)
    choice = rng.random()
    if choice < 0.75:
        return text.encode()
    raw = text.encode()
    options: list[tuple[str, Callable[[], bytes]]] = [
        ("truncate", lambda: raw[: rng.randrange(len(raw) + 1)]),
        ("utf-16", lambda: text.encode("utf-16")),
        ("bom", lambda: b"\xef\xbb\xbf" + raw),
        ("latin-1", lambda: text.encode("latin-1", "replace")),
        ("invalid utf-8", lambda: raw.replace(b'"', b'"\xff', 1)),
        ("trailing garbage", lambda: raw + b"}{"),
        ("not an object", lambda: rng.choice((b"null", b"[]", b"42", b'"x"', b"", b" ", b"[" * 3000))),
        ("nan", lambda: raw.replace(b"1", b"NaN", 1)),
        ("duplicate keys", lambda: raw.replace(b'{"apiVersion"', b'{"request": null, "apiVersion"', 1)),
    ]
    name, make = rng.choice(options)
    log.append(f"encode: {name}")
    return make()


def make_case(number: int) -> Case:
    """Case `number`: the same bytes every time."""
    rng = random.Random(number)
    obj = copy.deepcopy(rng.choice(seeds()))
    uid = rng.choice(("u-" + str(number), "ü-名-" + str(number), "x" * 300 + str(number)))
    body: Any = review_of(obj, rng, uid)
    mutations: list[str] = []
    must_deny = ""
    endpoint = rng.choice(("/validate", "/validate", "/mutate"))
    kind = rng.random()
    if kind < 0.2 and body["request"]["operation"] != "DELETE" and gpu_quantity_paths(obj):
        # A broken GPU quantity, and nothing else: the object cannot be read, so never allowed.
        path = rng.choice(gpu_quantity_paths(obj))
        bad = copy.deepcopy(rng.choice(BAD_QUANTITIES))
        _set(body["request"]["object"], path, bad)
        mutations.append(f"gpu quantity {'/'.join(map(str, path))} = {bad!r:.40}")
        must_deny = f"GPU quantity {bad!r:.40} at {'/'.join(map(str, path))}"
        raw = json.dumps(body).encode()
        content_type: str | None = "application/json"
    else:
        try:
            for _ in range(rng.choice((1, 1, 2, 3, 5))):
                mutation = rng.choice(_STRUCTURAL)
                body = mutation(rng, body, mutations)
                if mutation is _nest:  # walking a deep structure again would dominate the run
                    break
            raw = _encode(rng, body, mutations)
        except RecursionError:  # nested deeper than Python's json can write: write it by hand
            depth = 5000
            raw = json.dumps(uid).encode()
            raw = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":' + raw + (
                b',"object":' + b"[" * depth + b"]" * depth + b"}}")
            mutations.append(f"nested {depth} deep (hand-written)")
        content_type = "application/json" if rng.random() < 0.85 else rng.choice((*CONTENT_TYPES, None))
        if content_type != "application/json":
            mutations.append(f"content-type {content_type!r}")
    return Case(number, endpoint, content_type, raw, mutations, must_deny)
