"""What people hold and what they wait for: the ledger's charged workloads and the GPU queue, as
`GET /api/v1/workloads`, `GET /api/v1/queue` and their `gpuctl` and `gpu-gateway` commands show
them. Pure: ledger and queue rows in, JSON out (`now` is passed in).

A workload *holds* GPUs when its reservation is charged: a workload a person launched, or a
CronJob's Job (each charged on its own). What controllers make from a charged workload (its
ReplicaSets, Jobs, pods) is recorded uncharged under it and is not listed again, nor is a queued
workload's reservation (uncharged until the controller releases it), a CronJob, a finished pod or a
data object. A workload *waits* while it has a row in the queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from gateway.admission.actors import kind_plural
from gateway.admission.dra import RESOURCE_KEYS
from gateway.admission.kinds import KindRegistry
from gateway.admission.owned_data import DATA_KINDS
from gateway.admission.shape import gang_pods
from gateway.admission.workloads import ADAPTERS

RUNNING, QUEUED = "running", "queued"
#: A record that holds no GPUs of its own (`gpuctl describe` of a pod a controller made, a CronJob).
RECORDED = "recorded"


class Record(Protocol):
    """One reservation of the ledger (gateway.admission.ports.LedgerRow)."""

    @property
    def resource(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def charged(self) -> bool: ...
    @property
    def created_at(self) -> float: ...
    @property
    def extra(self) -> Mapping[str, Any]:
        """The reservation's shape (admission/shape.py), parsed."""
        ...


def utc_time(ts: float) -> str:
    """RFC 3339 in UTC, to the second: `2026-11-20T10:00:11+00:00`."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def queue_items(rows: Sequence[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """The JSON contract of `gpu-gateway queue -o json` and `GET /api/v1/queue`, one item per
    waiting workload, `rows` in queue order (gateway.scheduling.ports.QueueStore.queue_rows)."""
    return [{
        "position": i,
        "resource": r["resource"], "namespace": r["namespace"], "name": r["name"],
        "owner": r["owner"], "team": r["team"], "role": r["role"],
        "gpus": int(r["gpus"]), "pods": int(r["pods"]),
        "priority": int(r["priority"]), "priority_class": r["priority_class"],
        "queued_at": utc_time(float(r["arrival"])),
        "waited_s": round(max(now - float(r["arrival"]), 0.0), 1),
        "reason": r["reason"] or "not yet placed by the controller",
    } for i, r in enumerate(rows, start=1)]


def resource_kinds(kinds: KindRegistry) -> dict[str, str]:
    """Ledger key (`pytorchjobs.kubeflow.org`, `pods`) → kind, for every kind the gateway records."""
    plural = {(group, kind): kind_plural(kind.lower()) for group, kind in ADAPTERS}
    plural.update(DATA_KINDS)
    plural.update({(spec.group, spec.kind): spec.resource for spec in kinds})
    found = {f"{resource}.{group}" if group else resource: kind for (group, kind), resource in plural.items()}
    found.update({key: kind for kind, key in RESOURCE_KEYS.items()})
    return found


def kind_of(resource: str, kinds: Mapping[str, str]) -> str:
    """The kind a ledger key names (`resource_kinds`); the key itself for one the gateway has no
    name for (an unregistered kind it walked generically)."""
    return kinds.get(resource, resource)


def pods_of(record: Record) -> int:
    """GPU pods of a reservation at its recorded size (what the queue releases together); a pod
    charged without a recorded shape (by the controller's ledger rebuild) is one."""
    return gang_pods(record.extra) or int(record.resource == "pods" and record.gpus > 0)


def holds(record: Record) -> bool:
    """Whether a reservation holds GPUs of its own (see the module docstring)."""
    return record.charged and record.gpus > 0


def workload_items(records: Iterable[Record], waiting: Iterable[Mapping[str, Any]],
                   kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """`{"kind", "namespace", "name", "owner", "team", "gpus", "pods", "state", "since"}` for each
    workload that holds GPUs and each that waits (`waiting`: `queue_items`), by namespace, name
    and kind. `since` is when it was admitted or released from the queue (running), or queued."""
    items = [_item(kind_of(r.resource, kinds), r.namespace, r.name, r.owner, r.team, r.gpus, pods_of(r), RUNNING,
                   utc_time(r.created_at)) for r in records if holds(r)]
    items += [_item(kind_of(q["resource"], kinds), q["namespace"], q["name"], q["owner"], q["team"], q["gpus"],
                    q["pods"], QUEUED, q["queued_at"]) for q in waiting]
    return sorted(items, key=lambda i: (i["namespace"], i["name"], i["kind"]))


def _item(kind: str, namespace: str, name: str, owner: str, team: str, gpus: int, pods: int, state: str,
          since: str) -> dict[str, Any]:
    return {"kind": kind, "namespace": namespace, "name": name, "owner": owner, "team": team, "gpus": int(gpus),
            "pods": int(pods), "state": state, "since": since}
