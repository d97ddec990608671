"""Who acts for whom: the controllers, operators and autoscalers that act on people's
workloads, and how what they create is tied to a person through the ledger. Pure.

An actor is an exact identity (limits.yaml `actors`) with the kinds it may create. What an
actor creates belongs to nobody by itself: it belongs to the owner of the ledger record its
controller `ownerReference` points to, by UID, and so to the owner of the root workload the
chain descends from (Deployment -> ReplicaSet -> Pod, CronJob -> Job -> Pod, ...). Nothing
the new object says about its owner (annotations, labels) is read. Requests by actors that
change how many GPUs can run are decided against the owner's caps and role, never the actor's.

Wildcards are refused except over node identities (`system:node:*`, the kubelets' mirror
pods), which only the cluster's node credentials can take: a wildcard over service accounts
would let anyone who can run a pod under a matching name act as a controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.pointer import is_object

#: The only wildcard an actor name may use.
NODE_PATTERN = "system:node:*"


def kind_name(group: str, kind: str) -> str:
    """How `actors.<name>.creates` names a kind: `Pod`, `apps/ReplicaSet`, `batch/Job`."""
    return f"{group}/{kind}" if group else kind


@dataclass(frozen=True, slots=True)
class ActorSpec:
    name: str
    """The exact Kubernetes username (or `system:node:*`)."""
    creates: frozenset[str] = frozenset()
    """Kinds (`kind_name`) whose GPU objects it may create, each tied to a parent it controls."""

    def may_create(self, group: str, kind: str) -> bool:
        return kind_name(group, kind) in self.creates


class Actors:
    """The actors of the policy, looked up by username."""

    __slots__ = ("_exact", "_nodes")

    def __init__(self, specs: Iterable[ActorSpec] = ()) -> None:
        self._exact: dict[str, ActorSpec] = {}
        self._nodes: ActorSpec | None = None
        for spec in specs:
            if spec.name == NODE_PATTERN:
                self._nodes = spec
            else:
                self._exact[spec.name] = spec

    def find(self, user: str) -> ActorSpec | None:
        spec = self._exact.get(user)
        if spec is None and self._nodes is not None and user.startswith("system:node:") and len(user) > 12:
            return self._nodes
        return spec

    def names(self) -> list[str]:
        return sorted([*self._exact, *([NODE_PATTERN] if self._nodes else [])])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Actors) and (self._exact, self._nodes) == (other._exact, other._nodes)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._exact)))


def name_error(name: str) -> str | None:
    """Why `name` cannot be an actor, or None."""
    if not name or name != name.strip():
        return "an actor is a non-empty username"
    if name == NODE_PATTERN:
        return None
    if any(c in name for c in "*?["):
        return (f"actor {name!r} is a pattern; actors are exact usernames (the only pattern allowed is "
                f"{NODE_PATTERN!r})")
    return None


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """The controller `ownerReference` of an object: the parent whose controller made it."""

    api_version: str
    kind: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def describe(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def resource_key(self) -> str:
        """The ledger's kind key for the parent (`replicasets.apps`), from the kind's plural."""
        plural = kind_plural(self.kind.lower())
        return f"{plural}.{self.group}" if self.group else plural


def kind_plural(word: str) -> str:
    """The resource name Kubernetes forms from a kind (`replicaset` -> `replicasets`)."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return word[:-1] + "ies"
    return word + "s"


def controller_ref(obj: Any) -> OwnerRef | None:
    """The object's ownerReference with `controller: true`, if it has a well-formed one."""
    meta = obj.get("metadata") if is_object(obj) else None
    refs = meta.get("ownerReferences") if is_object(meta) else None
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if is_object(ref) and ref.get("controller") is True:
            fields = [ref.get(k) for k in ("apiVersion", "kind", "name", "uid")]
            if all(isinstance(f, str) and f for f in fields):
                return OwnerRef(*(str(f) for f in fields))
    return None


def object_uid(obj: Any) -> str:
    meta = obj.get("metadata") if obj is not None and is_object(obj) else None
    uid = meta.get("uid") if meta is not None and is_object(meta) else None
    return uid if isinstance(uid, str) else ""


def parse_actors(raw: Mapping[str, Any]) -> list[ActorSpec]:
    """`actors:` of limits.yaml (a mapping of username to `{creates: [kinds]}`); raises ValueError."""
    specs = []
    for name, body in raw.items():
        error = name_error(str(name))
        if error:
            raise ValueError(error)
        body = body or {}
        if not is_object(body):
            raise ValueError(f"actors.{name} must be a mapping such as {{creates: [Pod]}}")
        unknown = set(body) - {"creates"}
        if unknown:
            raise ValueError(f"actors.{name} has unknown keys: {', '.join(sorted(unknown))} (known: creates)")
        creates = body.get("creates") or []
        if not isinstance(creates, list) or not all(isinstance(k, str) and k and "*" not in k for k in creates):
            raise ValueError(f"actors.{name}.creates must be a list of kinds such as [Pod, apps/ReplicaSet]")
        specs.append(ActorSpec(str(name), frozenset(creates)))
    return specs
