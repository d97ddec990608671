"""What the ledger keeps of a workload's shape, and the arithmetic on it. Pure.

A reservation's shape is JSON: its pod sets by template path (`[path, count, GPUs per pod]`),
how the `/scale` subresource moves them, whether the workload's children are charged one
by one (a CronJob's Jobs), for a pod the GPUs each DRA claim template it names was counted
for (`claims`, checked when the resourceclaim controller makes the pod's claims), and for a
workload that holds its own charge the priority classes it was admitted with
(`priority_classes`, which its controllers' GPU objects may carry). It lets the gateway decide
later requests that do not carry the workload (a `/scale`, a controller's child) from the
ledger alone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

import orjson

from gateway.admission.workloads import Workload, surge_pods

#: `charge` of a workload whose children are each charged to its owner when they are created.
CHARGE_CHILDREN = "children"


def shape_of(workload: Workload, scale: Any = None, *, charge_children: bool = False,
             priority_classes: Iterable[str] | None = None) -> str:
    """The JSON kept with a reservation. `scale` is the kind's `ScaleRule`, if it has one;
    `priority_classes`, those the workload was admitted with (None: none recorded)."""
    shape: dict[str, Any] = {"sets": [[ps.template_path, ps.count, ps.gpus_each] for ps in workload.pod_sets]}
    if scale is not None:
        shape["scale"] = {"moves": [list(m) for m in scale.moves], "surge": scale.surge, "floor": scale.floor}
    if charge_children:
        shape["charge"] = CHARGE_CHILDREN
    if priority_classes is not None:
        shape["priority_classes"] = sorted(priority_classes)
    claims = _pod_claims(workload)
    if claims:
        shape["claims"] = {"": claims}
    return _dump(shape)


def _pod_claims(workload: Workload) -> dict[str, int]:
    """A pod's template claims and the GPUs each was counted for, by `spec.resourceClaims` entry."""
    counted: dict[str, int] = {}
    for ps in workload.pod_sets:
        if ps.template_path != "":
            continue
        for claim in ps.claims:
            if not claim.shared and claim.gpus is not None:
                counted[claim.name] = counted.get(claim.name, 0) + claim.gpus
    return counted


def _dump(value: Mapping[str, Any]) -> str:
    """Compact JSON. Numbers orjson cannot hold (only in a damaged stored shape) take the slow path."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def parse(shape: str) -> Mapping[str, Any]:
    """A stored shape; a damaged one reads as empty (nothing can then be computed from it).
    Read only: the result is shared, since the same root's shape is read for each of its pods."""
    try:
        value = orjson.loads(shape or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _sets(shape: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(count, GPUs per pod) of each pod set."""
    out = []
    for entry in shape.get("sets") or ():
        if isinstance(entry, list) and len(entry) == 3 and all(_is_int(v) for v in entry[1:]):
            out.append((int(entry[1]), int(entry[2])))
    return out


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def max_gpus_per_pod(shape: str) -> int:
    """The most GPUs one pod of the workload may ask for."""
    return max((each for _, each in _sets(parse(shape))), default=0)


def charges_children(shape: str) -> bool:
    return parse(shape).get("charge") == CHARGE_CHILDREN


@functools.lru_cache(maxsize=4096)
def admitted_classes(shape: str) -> frozenset[str] | None:
    """The priority classes the workload was admitted with ("" for none set); None where the
    shape records none (written before they were kept, or damaged): nothing beyond the role's."""
    value = parse(shape).get("priority_classes")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return None
    return frozenset(value)


def surges(shape: str) -> bool:
    """Whether the workload's scale adds a rolling update's surge (a Deployment's maxSurge)."""
    rule = parse(shape).get("scale")
    return isinstance(rule, dict) and bool(rule.get("surge")) and rule.get("surge") not in ("0%", "0")


#: The GPUs a root asks for while its charge is held above them: set when a scale-down or an
#: edit leaves pods that still run (terminating) above the new size; gone once they have ended.
ASKS = "asks"


def held_charge(shape: str, asked: int, held: int) -> tuple[int, str]:
    """The charge of a root that asks for `asked` GPUs while the pods recorded under it hold
    `held`, and its shape: the charge never drops below what its pods still hold (they run
    out their grace period after a scale-down), and the shape keeps what it asks for."""
    data = dict(parse(shape))
    if held > asked:
        data[ASKS] = asked
        return held, _dump(data)
    if ASKS not in data:
        return asked, shape
    data.pop(ASKS)
    return asked, _dump(data)


def asked(shape: str) -> int | None:
    """What a root whose charge is held above its size asks for (`held_charge`); None when not held."""
    value = parse(shape).get(ASKS)
    return value if _is_int(value) else None


def gang_pods(shape: str | Mapping[str, Any]) -> int:
    """GPU pods of the workload at its recorded size (`shape` stored, or parsed)."""
    data = parse(shape) if isinstance(shape, str) else shape
    return sum(count for count, each in _sets(data) if each)


def scaled(shape: str, replicas: int, old_gpus: int, old_replicas: int | None) -> tuple[int, str] | None:
    """GPUs of the workload once `/scale` sets `replicas`, with its shape at that size; None
    when it cannot be computed.

    From the pod sets the kind's scale rule moves; a shape written before pod sets were kept by
    path carries `unit` (GPUs per replica) instead, and keeps its shape.
    """
    data = parse(shape)
    rule = data.get("scale")
    sets = _sets(data)
    if isinstance(rule, dict) and sets and len(sets) == len(data["sets"]):
        counts = [count for count, _ in sets]
        floor = rule.get("floor")
        moved = max(replicas, floor if _is_int(floor) else 0)
        for entry in rule.get("moves") or ():
            if not (isinstance(entry, list) and len(entry) == 2 and all(_is_int(v) for v in entry)):
                return None
            index, per_replica = entry
            if index >= len(counts):
                return None
            counts[index] = per_replica * (moved + (surge_pods(moved, rule["surge"]) if rule.get("surge") else 0))
        new = dict(data)
        new["sets"] = [[entry[0], count, each] for entry, count, (_, each) in zip(data["sets"], counts, sets,
                                                                                   strict=True)]
        return sum(count * each for count, (_, each) in zip(counts, sets, strict=True)), _dump(new)
    unit = data.get("unit")
    if _is_int(unit):
        return unit * replicas, shape
    if old_replicas and old_gpus % old_replicas == 0 and len(sets) <= 1:
        return old_gpus // old_replicas * replicas, shape
    return None
