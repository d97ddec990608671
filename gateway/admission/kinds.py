"""Workload kinds an operator registers without code: limits.yaml `workload_kinds`.

An entry names a kind (API group, kind, plural resource) and says where its pods are, which
fields count them and where GPUs sit outside container resources. `parse_kinds` turns the
YAML into a `KindRegistry` (ValueError naming the bad field); `evaluate` reads one object of
a registered kind into `Located` pod sets, which `workloads.read_workload` counts exactly as
it counts the built-in adapters' pod templates. Pure: no I/O.

Paths are JSON pointers whose tokens are field names (letters, digits, `_`, `-`, `.`) or `*`,
every item of a list or value of a map. Inside a pod location, a path without the leading
`/` is relative to the location.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.pointer import escape, is_object
from gateway.admission.quantity import MAX_REPLICAS, replica_count
from gateway.errors import WorkloadError

#: How a location holds its pod: a PodTemplateSpec (metadata + spec), a bare PodSpec
#: (`containers`, `initContainers`), or one container (its `resources`).
SHAPES = ("template", "pod_spec", "container")

_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_GROUP = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")
_RESOURCE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DIGITS = re.compile(r"\s*[0-9]{1,12}\s*")

Concrete = tuple[str | int, ...]
"""A path with every wildcard resolved: map keys and list indices."""


@dataclass(frozen=True, slots=True)
class Path:
    tokens: tuple[str, ...]
    absolute: bool
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Count:
    """A field that counts a location's pods (replicas, instances, maxReplicas, ...)."""

    field: Path
    default: int | None = None
    """Counted when the field is absent; None: an absent field does not count."""
    unbounded: frozenset[int] = frozenset()
    """Values that mean "no upper bound" (Knative's maxReplicas 0)."""
    unbounded_if_absent: bool = False
    """An absent field means no upper bound (an autoscaler's unset maximum)."""
    when: Path | None = None
    """Counts only while the value there is true (`dynamicAllocation.enabled`)."""


@dataclass(frozen=True, slots=True)
class Invocations:
    """A location that runs once per invocation by name (Argo's templates), not once."""

    name: Path
    """The location's own name field (relative)."""
    by: tuple[Path, ...]
    """Objects that invoke a location (Argo steps and DAG tasks)."""
    field: Path
    """An invoking object's field naming the location it runs (relative to it)."""
    fan_out: tuple[Path, ...] = ()
    """An invoking object's fields that run it once per item (withItems, withParam, withSequence)."""
    limit: Path | None = None
    """A field of the invoking location capping how many of its invocations run at once."""
    roots: tuple[Path, ...] = ()
    """Fields naming a location that runs once from outside (entrypoint, exit handler)."""


@dataclass(frozen=True, slots=True)
class PodLocation:
    path: Path
    shape: str
    containers: tuple[Path, ...] = ()
    """More containers of the same pod (KServe's `model`, Argo's `container`, sidecars)."""
    gpus: tuple[Path, ...] = ()
    """GPU blocks of the same pod: `{name: <resource>, quantity: <n>}` (Spark's `gpu`)."""
    replicas: tuple[Count, ...] = ()
    """Fields counting the pods: the largest wins; none set counts 1."""
    times: tuple[Count, ...] = ()
    """Further factors (each defaults to 1)."""
    invoked: Invocations | None = None
    limit: Path | None = None
    """A cap on the count (Argo's spec.parallelism), also the count when it is unbounded; 0 is no cap."""


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A field whose presence (without `unless` beside it) puts GPUs out of the gateway's sight."""

    path: Path
    why: str
    unless: Path | None = None


@dataclass(frozen=True, slots=True)
class KindSpec:
    group: str
    kind: str
    resource: str
    pods: tuple[PodLocation, ...] = ()
    unresolved: tuple[Unresolved, ...] = ()


class KindRegistry:
    """The registered kinds, by (API group, kind)."""

    __slots__ = ("_by_key",)

    def __init__(self, specs: Iterable[KindSpec] = ()) -> None:
        self._by_key: dict[tuple[str, str], KindSpec] = {}
        for spec in specs:
            key = (spec.group, spec.kind)
            if key in self._by_key:
                raise ValueError(f"{spec.group}/{spec.kind} is registered twice")
            self._by_key[key] = spec

    def get(self, group: str, kind: str) -> KindSpec | None:
        return self._by_key.get((group, kind))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[KindSpec]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KindRegistry) and self._by_key == other._by_key

    def __hash__(self) -> int:
        return hash(tuple(self._by_key.items()))

    def __repr__(self) -> str:
        return f"KindRegistry({', '.join(f'{g}/{k}' for g, k in self._by_key)})"


# ---------------------------------------------------------------- parsing limits.yaml


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def parse_path(value: Any, where: str, *, relative: bool = False, wildcards: bool = True) -> Path:
    """`/spec/templates/*/container`; with `relative`, also `model` or `sidecars/*` (no `/` first)."""
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{value!r} is not a path (like /spec/template or, inside a location, model)")
    absolute = value.startswith("/")
    if not absolute and not relative:
        raise _fail(where, f"{value!r} must start with / (a path from the object's root)")
    tokens = tuple(value[1:].split("/") if absolute else value.split("/"))
    for token in tokens:
        if token == "*":
            if not wildcards:
                raise _fail(where, f"{value!r}: no * here (it must name one field)")
        elif not _TOKEN.fullmatch(token):
            raise _fail(where, f"{value!r}: {token!r} is not a field name (letters, digits, _ - .) or *")
    return Path(tokens, absolute, value)


def _keys(entry: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
    extra = sorted(set(entry) - set(allowed))
    if extra:
        raise _fail(where, f"unknown setting(s) {', '.join(map(str, extra))} (known: {', '.join(allowed)})")


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    return value


def _paths(value: Any, where: str, *, relative: bool = False, wildcards: bool = True) -> tuple[Path, ...]:
    return tuple(parse_path(v, f"{where}[{i}]", relative=relative, wildcards=wildcards)
                 for i, v in enumerate(_list(value, where)))


def _nonneg(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, f"must be a non-negative integer, not {value!r}")
    return value


def _count_spec(value: Any, where: str) -> Count:
    if isinstance(value, str):
        return Count(parse_path(value, where, relative=True, wildcards=False))
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a field path or {field, default, unbounded, when}")
    _keys(value, ("field", "default", "unbounded", "when"), where)
    unbounded = _list(value.get("unbounded"), f"{where}.unbounded")
    when = value.get("when")
    return Count(
        field=parse_path(value.get("field"), f"{where}.field", relative=True, wildcards=False),
        default=None if value.get("default") is None else _nonneg(value["default"], f"{where}.default"),
        unbounded=frozenset(_nonneg(v, f"{where}.unbounded") for v in unbounded if v is not None),
        unbounded_if_absent=None in unbounded,
        when=None if when is None else parse_path(when, f"{where}.when", relative=True, wildcards=False),
    )


def _invocations(value: Any, where: str) -> Invocations:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping {name, by, field, fan_out, limit, roots}")
    _keys(value, ("name", "by", "field", "fan_out", "limit", "roots"), where)
    by = _paths(value.get("by"), f"{where}.by")
    if not by:
        raise _fail(f"{where}.by", "must list where invocations are")
    limit = value.get("limit")
    return Invocations(
        name=parse_path(value.get("name"), f"{where}.name", relative=True, wildcards=False),
        by=by,
        field=parse_path(value.get("field"), f"{where}.field", relative=True, wildcards=False),
        fan_out=_paths(value.get("fan_out"), f"{where}.fan_out", relative=True, wildcards=False),
        limit=None if limit is None else parse_path(limit, f"{where}.limit", relative=True, wildcards=False),
        roots=_paths(value.get("roots"), f"{where}.roots"),
    )


def _location(value: Any, where: str) -> PodLocation:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping {path, shape, ...}")
    _keys(value, ("path", "shape", "containers", "gpus", "replicas", "times", "invoked", "limit"), where)
    path = parse_path(value.get("path"), f"{where}.path")
    if not path.tokens or path.tokens == ("",):
        raise _fail(f"{where}.path", "must name a field inside the object")
    shape = value.get("shape")
    if shape not in SHAPES:
        raise _fail(f"{where}.shape", f"{shape!r} is not one of {', '.join(SHAPES)}")
    limit = value.get("limit")
    return PodLocation(
        path=path,
        shape=shape,
        containers=_paths(value.get("containers"), f"{where}.containers", relative=True),
        gpus=_paths(value.get("gpus"), f"{where}.gpus", relative=True),
        replicas=tuple(_count_spec(v, f"{where}.replicas[{i}]")
                       for i, v in enumerate(_list(value.get("replicas"), f"{where}.replicas"))),
        times=tuple(_count_spec(v, f"{where}.times[{i}]")
                    for i, v in enumerate(_list(value.get("times"), f"{where}.times"))),
        invoked=None if value.get("invoked") is None else _invocations(value["invoked"], f"{where}.invoked"),
        limit=None if limit is None else parse_path(limit, f"{where}.limit", relative=True, wildcards=False),
    )


def _condition(value: Any, where: str) -> Unresolved:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping {path, why, unless}")
    _keys(value, ("path", "why", "unless"), where)
    why = value.get("why")
    if not isinstance(why, str) or not why.strip():
        raise _fail(f"{where}.why", "must say, in words a person can act on, why the GPUs cannot be counted")
    unless = value.get("unless")
    return Unresolved(
        path=parse_path(value.get("path"), f"{where}.path"),
        why=why.strip(),
        unless=None if unless is None else parse_path(unless, f"{where}.unless", relative=True, wildcards=False),
    )


def _entry(value: Any, where: str, builtin: Collection[tuple[str, str]]) -> KindSpec:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping {group, kind, resource, pods, unresolved}")
    _keys(value, ("group", "kind", "resource", "pods", "unresolved"), where)
    group, kind = value.get("group"), value.get("kind")
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise _fail(f"{where}.group", f"{group!r} is not an API group (e.g. serving.kserve.io)")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise _fail(f"{where}.kind", f"{kind!r} is not a kind (e.g. InferenceService)")
    where = f"{where} ({group}/{kind})"
    if (group, kind) in builtin:
        raise _fail(where, "the gateway reads this kind itself (a built-in adapter); remove the entry")
    resource = value.get("resource", kind.lower() + "s")
    if not isinstance(resource, str) or not _RESOURCE.fullmatch(resource):
        raise _fail(f"{where}.resource", f"{resource!r} is not a plural resource name (e.g. inferenceservices)")
    pods = value.get("pods")
    if pods is None:
        raise _fail(f"{where}.pods", "is missing (write pods: [] for a kind that runs no pods itself)")
    return KindSpec(
        group=group,
        kind=kind,
        resource=resource,
        pods=tuple(_location(v, f"{where}.pods[{i}]") for i, v in enumerate(_list(pods, f"{where}.pods"))),
        unresolved=tuple(_condition(v, f"{where}.unresolved[{i}]")
                         for i, v in enumerate(_list(value.get("unresolved"), f"{where}.unresolved"))),
    )


def parse_kinds(value: Any, builtin: Collection[tuple[str, str]] = ()) -> KindRegistry:
    """limits.yaml `workload_kinds` as a registry; ValueError names the entry and field at fault.

    `builtin` are the (group, kind) pairs the gateway has adapters for, which an entry may not redefine.
    """
    entries = _list(value, "workload_kinds")
    specs = [_entry(v, f"workload_kinds[{i}]", builtin) for i, v in enumerate(entries)]
    try:
        return KindRegistry(specs)
    except ValueError as exc:
        raise _fail("workload_kinds", str(exc)) from None


# ---------------------------------------------------------------- reading an object


@dataclass(frozen=True, slots=True)
class Located:
    """One pod set of a registered kind's object, before its GPUs are counted."""

    name: str
    """Its field path (`spec.predictor`, `spec.templates[2]`), unique within the object."""
    count: int
    template_path: str | None
    """JSON pointer of its PodTemplateSpec (shape `template`), else None."""
    spec: Any
    """The PodSpec whose containers and init containers it runs; None for one container."""
    spec_where: str
    containers: tuple[tuple[str, Any], ...] = ()
    """(field path, container) of more app containers of the pod."""
    gpu_blocks: tuple[tuple[str, Any], ...] = ()
    """(field path, {name, quantity}) of GPU blocks of the pod."""
    unbounded: str = ""
    """Why its count has no bound the gateway can read ("" when it has one); the count is then 0."""


def dotted(path: Concrete) -> str:
    """A field path for messages and pod set names: spec.templates[2].container."""
    out = ""
    for token in path:
        if isinstance(token, int):
            out += f"[{token}]"
        elif _NAME.fullmatch(token):
            out += f".{token}" if out else token
        else:
            out += f"[{token!r}]"
    return out


def pointer(path: Concrete) -> str:
    return "".join(f"/{escape(str(t))}" for t in path)


def _matches(node: Any, tokens: tuple[str, ...], at: Concrete = ()) -> Iterator[tuple[Concrete, Any]]:
    """(concrete path, value) of every non-null value the tokens reach, in document order."""
    if not tokens:
        if node is not None:
            yield at, node
        return
    head, rest = tokens[0], tokens[1:]
    if head == "*":
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from _matches(item, rest, (*at, i))
        elif is_object(node):
            for key, value in node.items():
                yield from _matches(value, rest, (*at, str(key)))
    elif is_object(node):
        if head in node:
            yield from _matches(node[head], rest, (*at, head))
    elif isinstance(node, list) and head.isdigit() and int(head) < len(node):
        yield from _matches(node[int(head)], rest, (*at, int(head)))


def _at(obj: Any, base: Concrete, base_node: Any, path: Path) -> tuple[Concrete, Any]:
    """The single value `path` (no wildcards) names: from the root when absolute, else from base."""
    node, at = (obj, ()) if path.absolute else (base_node, base)
    for token in path.tokens:
        if is_object(node):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            node = None
        at = (*at, token)
        if node is None:
            break
    return at, node


def _number(value: Any, where: str, *, strings: bool = False) -> int:
    """A count: an integer (with `strings`, also a string of digits, as Argo's withSequence)."""
    if strings and isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    return replica_count(value, where)


Bound = tuple[int | None, str, str]
"""(count or None when it has no bound, why it has none, how to give it one)."""


def _count_of(obj: Any, base: Concrete, node: Any, counts: tuple[Count, ...], *, largest: bool) -> Bound:
    """The largest of `counts` (or, without `largest`, their product); 1 when none is set."""
    found: list[int] = []
    for c in counts:
        if c.when is not None and _at(obj, base, node, c.when)[1] is not True:
            continue
        at, value = _at(obj, base, node, c.field)
        if value is None:
            if c.unbounded_if_absent:
                return None, f"{dotted(at)} is not set", f"set {dotted(at)}"
            if c.default is not None:
                found.append(c.default)
            continue
        n = _number(value, dotted(at))
        if n in c.unbounded:
            return None, f"{dotted(at)} is {n}, which means no limit", f"set {dotted(at)} to a limit"
        found.append(n)
    if largest:
        return (max(found) if found else 1), "", ""
    total = 1
    for n in found:
        total = min(total * n, MAX_REPLICAS)
    return total, "", ""


def _times(a: int | None, b: int | None) -> int | None:
    if a == 0 or b == 0:
        return 0
    if a is None or b is None:
        return None
    return min(a * b, MAX_REPLICAS)


def _plus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else min(a + b, MAX_REPLICAS)


def _fan_out(obj: Any, at: Concrete, node: Any, fields: tuple[Path, ...]) -> tuple[int | None, str]:
    """How many times one invocation runs its location: a list's length, a sequence's count
    (the largest where several are set); 1 when none is."""
    found: list[int] = []
    for field in fields:
        where, value = _at(obj, at, node, field)
        if value is None:
            continue
        n = len(value) if isinstance(value, list) else _sequence(value, dotted(where)) if is_object(value) else None
        if n is None:
            return None, f"{dotted(where)} cannot be counted from the object"
        found.append(n)
    return (max(found) if found else 1), ""


def _sequence(seq: Mapping[str, Any], where: str) -> int | None:
    """Argo's withSequence: `count`, or `start` (default 0) to `end`; None while a template
    expression stands in for a number (it is resolved only when the workflow runs)."""
    fields = {k: seq.get(k) for k in ("count", "start", "end") if seq.get(k) is not None}
    if any(isinstance(v, str) and not _DIGITS.fullmatch(v) for v in fields.values()):
        return None  # a template expression, or a number too long to be one
    if "count" in fields:
        return _number(fields["count"], f"{where}.count", strings=True)
    if "end" in fields:
        start = _number(fields.get("start", 0), f"{where}.start", strings=True)
        return abs(_number(fields["end"], f"{where}.end", strings=True) - start) + 1
    return None


def _invoked_counts(obj: Any, inv: Invocations, matches: list[tuple[Concrete, Any]]) -> list[tuple[int | None, str]]:
    """How many times each match runs at once, worst case, and why where it has no bound.

    Each invocation adds its invoker's count times its fan-out (the invoker's `limit` caps how
    many of its invocations of one location run at once); a root adds one. Invocations in a
    cycle (recursion), and all they invoke, have no bound.
    """
    names: dict[str, list[int]] = {}
    for i, (at, node) in enumerate(matches):
        name = _at(obj, at, node, inv.name)[1]
        if isinstance(name, str):
            names.setdefault(name, []).append(i)
    counts: list[int | None] = [0] * len(matches)
    why = [""] * len(matches)
    for root in inv.roots:
        for _, value in _matches(obj, root.tokens):
            for i in names.get(value, []) if isinstance(value, str) else ():
                counts[i] = _plus(counts[i], 1)
    # caller (None: outside every match) → callee → (sum of fan-outs, why one has no bound)
    calls: dict[int | None, dict[int, tuple[int | None, str]]] = {}
    for pattern in inv.by:
        for at, node in _matches(obj, pattern.tokens):
            target = _at(obj, at, node, inv.field)[1]
            if not isinstance(target, str) or target not in names:
                continue
            callers = [i for i, (p, _) in enumerate(matches) if at[:len(p)] == p]
            caller = max(callers, key=lambda i: len(matches[i][0])) if callers else None
            fan, reason = _fan_out(obj, at, node, inv.fan_out)
            for callee in names[target]:
                total, was = calls.setdefault(caller, {}).get(callee, (0, ""))
                calls[caller][callee] = (_plus(total, fan), was or reason)
    for callee, (fan, reason) in calls.pop(None, {}).items():
        counts[callee] = _plus(counts[callee], fan)
        why[callee] = why[callee] or reason
    waiting = [0] * len(matches)
    for callees in calls.values():
        for callee in callees:
            waiting[callee] += 1
    ready = [i for i in range(len(matches)) if waiting[i] == 0]
    done = set()
    while ready:  # callers before callees (Kahn's order); what is never ready is in or after a cycle
        caller = ready.pop()
        done.add(caller)
        at, node = matches[caller]
        cap = _limit(obj, at, node, inv.limit)[0]
        for callee, (fan, reason) in calls.get(caller, {}).items():
            runs = fan if cap is None else (cap if fan is None else min(fan, cap))
            counts[callee] = _plus(counts[callee], _times(counts[caller], runs))
            if counts[callee] is None:
                why[callee] = why[callee] or (reason if runs is None else why[caller])
            waiting[callee] -= 1
            if waiting[callee] == 0:
                ready.append(callee)
    for i in range(len(matches)):
        if i not in done:
            counts[i] = None
            why[i] = why[i] or f"{dotted(matches[i][0])} is invoked in a cycle (recursion)"
    return list(zip(counts, why, strict=True))


def _holds_pod(shape: str, node: Mapping[str, Any], containers: tuple[Any, ...], blocks: tuple[Any, ...]) -> bool:
    if shape != "pod_spec" or containers or blocks:
        return True
    return isinstance(node.get("containers"), list) or isinstance(node.get("initContainers"), list)


def _parts(obj: Any, at: Concrete, node: Any, paths: tuple[Path, ...], what: str) -> tuple[tuple[str, Any], ...]:
    found = []
    for path in paths:
        base = () if path.absolute else at
        for where, value in _matches(obj if path.absolute else node, path.tokens, base):
            if not is_object(value):
                raise WorkloadError(f"{dotted(where)} is not an object ({what})")
            found.append((dotted(where), value))
    return tuple(found)


def _limit(obj: Any, at: Concrete, node: Any, path: Path | None) -> tuple[int | None, str]:
    """(the cap `path` holds, or None; its field path, "" without a path). A cap of 0 is no cap."""
    if path is None:
        return None, ""
    where, value = _at(obj, at, node, path)
    return (None if value is None else _number(value, dotted(where)) or None), dotted(where)


def evaluate(spec: KindSpec, obj: Mapping[str, Any]) -> tuple[list[Located], list[str]]:
    """The pod sets of `obj` (of kind `spec`), and why some of its GPUs cannot be counted.

    Raises WorkloadError where a field the entry names holds something unreadable (a count
    that is not a non-negative integer, a location that is not an object).
    """
    located: list[Located] = []
    for loc in spec.pods:
        matches = list(_matches(obj, loc.path.tokens))
        invoked = _invoked_counts(obj, loc.invoked, matches) if loc.invoked is not None else None
        for i, (at, node) in enumerate(matches):
            where = dotted(at)
            if not is_object(node):
                raise WorkloadError(f"{where} is not an object")
            containers = _parts(obj, at, node, loc.containers, "a container")
            blocks = _parts(obj, at, node, loc.gpus, "a GPU block {name, quantity}")
            if not _holds_pod(loc.shape, node, containers, blocks):
                continue
            count, why, fix = (*invoked[i], "") if invoked is not None else (1, "", "")
            for counts, largest in ((loc.replicas, True), (loc.times, False)):
                n, why_n, fix_n = _count_of(obj, at, node, counts, largest=largest)
                count, why, fix = _times(count, n), why or why_n, fix or fix_n
            cap, cap_field = _limit(obj, at, node, loc.limit)
            if cap is not None:
                count = cap if count is None else min(count, cap)
            unbounded = ""
            if count is None:
                fixes = [f for f in (fix, cap_field and f"set {cap_field}") if f]
                name = _at(obj, at, node, loc.invoked.name)[1] if loc.invoked is not None else None
                label = f"{where} ({name})" if isinstance(name, str) else where
                unbounded = (f"may run {label} without a bound it can read ({why}); "
                             f"{' or '.join(fixes) or 'give it a bound'}")
                count = 0
            if loc.shape == "template":
                pod_spec = node.get("spec")
                template_path = pointer(at) if is_object(pod_spec) else None
                spec_where = f"{where}.spec"
            elif loc.shape == "pod_spec":
                pod_spec, template_path, spec_where = node, None, where
            else:
                pod_spec, template_path, spec_where = None, None, where
                containers = ((where, node), *containers)
            located.append(Located(where, count, template_path, pod_spec, spec_where, containers, blocks,
                                   unbounded))
    return located, _unresolved(spec, obj)


def _unresolved(spec: KindSpec, obj: Mapping[str, Any]) -> list[str]:
    reasons: list[str] = []
    for cond in spec.unresolved:
        for at, node in _matches(obj, cond.path.tokens):
            if cond.unless is not None and _at(obj, at, node, cond.unless)[1] is not None:
                continue
            if cond.why not in reasons:
                reasons.append(cond.why)
    return reasons
