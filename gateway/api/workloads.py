"""/api/v1/workloads and /api/v1/queue: what people hold, what waits and why (gateway.scheduling.holdings).

Scoped like the audit (`gateway.api.audit.readable`): one's own workloads, a lead's team's, an
administrator's all. The queue keeps every entry's place in the whole queue.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.api.audit import readable
from gateway.api.context import ApiContext, error, json_body
from gateway.api.schemas import Schema, json_content, ref
from gateway.audit.ports import AuditQuery, named_by
from gateway.errors import GatewayError
from gateway.scheduling.holdings import (
    QUEUED,
    RECORDED,
    RUNNING,
    holds,
    kind_of,
    pods_of,
    queue_items,
    resource_kinds,
    utc_time,
    workload_items,
)
from gateway.store.base import Store
from gateway.times import with_time

#: How many of a workload's newest audit records `describe` shows unless `limit` says otherwise.
HISTORY = 20

Handler = Callable[[Request, Identity, Store], Awaitable[Response]]


def workload_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The holdings endpoints, for the /api/v1 mount."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            identity = await ctx.identity(request)
            if isinstance(identity, Response):
                return identity
            if ctx.store is None:
                return error(503, "unavailable", "no store is attached to the admin API")
            try:
                return await handler(request, identity, ctx.store)
            except GatewayError as exc:
                return error(503, "unavailable", str(exc))
        return run

    async def queue(_: Request, identity: Identity, store: Store) -> Response:
        rows = await run_in_threadpool(store.queue_rows)
        return json_body({"items": [i for i in queue_items(rows, time.time()) if readable(ctx, identity, i)]})

    async def workloads(request: Request, identity: Identity, store: Store) -> Response:
        params = request.query_params
        wanted = {key: params[field] for field, key in (("user", "owner"), ("team", "team"),
                                                        ("namespace", "namespace")) if params.get(field)}
        records, rows = await run_in_threadpool(lambda: (store.reservations(), store.queue_rows()))
        items = workload_items(records, queue_items(rows, time.time()), resource_kinds(ctx.policy().kinds))
        return json_body({"items": [i for i in items if readable(ctx, identity, i)
                                    and all(i[k] == v for k, v in wanted.items())]})

    async def describe(request: Request, identity: Identity, store: Store) -> Response:
        kind, namespace, name = (request.path_params[k] for k in ("kind", "namespace", "name"))
        limit = request.query_params.get("limit", str(HISTORY))
        if not limit.isdigit() or not 0 < int(limit) <= 10_000:
            return error(400, "bad_request", f"limit must be a whole number from 1 to 10000, not {limit!r}")
        records, rows = await run_in_threadpool(lambda: (store.reservations(), store.queue_rows()))
        here = {r.resource: r for r in records if r.namespace == namespace and r.name == name}
        keys = named_by(kind, here)
        record = here[keys[0]] if keys else None
        if record is None or not readable(ctx, identity, {"owner": record.owner, "team": record.team}):
            return error(404, "not_found", f"the gateway's ledger holds no {kind} {namespace}/{name} that "
                                           f"{identity.user} may see; `gpuctl workloads` lists those you may "
                                           "see, and `gpuctl audit list` what happened to one that is gone")
        kinds = resource_kinds(ctx.policy().kinds)
        waiting = next((q for q in queue_items(rows, time.time()) if (q["resource"], q["namespace"], q["name"])
                        == (record.resource, namespace, name)), None)
        query = AuditQuery(kind=kind_of(record.resource, kinds), namespace=namespace, name=name)
        history = await run_in_threadpool(lambda: list(store.audit_rows(query)))
        state = QUEUED if waiting else RUNNING if holds(record) else RECORDED
        return json_body({
            "kind": kind_of(record.resource, kinds), "resource": record.resource, "namespace": namespace,
            "name": name, "owner": record.owner, "team": record.team, "gpus": record.gpus, "pods": pods_of(record),
            "charged": record.charged, "state": state,
            "since": waiting["queued_at"] if waiting else utc_time(record.created_at), "queue": waiting,
            "history": [with_time(r) for r in history if readable(ctx, identity, r)][-int(limit):],
        })

    return [
        Route("/workloads", endpoint(workloads), methods=["GET"]),
        Route("/workloads/{kind}/{namespace}/{name}", endpoint(describe), methods=["GET"]),
        Route("/queue", endpoint(queue), methods=["GET"]),
    ]


# ------------------------------------------------------------------ the OpenAPI description

_STR: Schema = {"type": "string"}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}


def _exactly(**properties: Schema) -> Schema:
    """An object with exactly these properties, all present (a contract scripts rely on)."""
    return {"type": "object", "required": list(properties), "additionalProperties": False, "properties": properties}


_QUEUE_ITEM = _exactly(
    position={**_COUNT, "description": "place in the whole queue, from 1"},
    resource={**_STR, "description": "the ledger's key: resource.group"}, namespace=_STR, name=_STR, owner=_STR,
    team=_STR, role=_STR, gpus=_COUNT, pods={**_COUNT, "description": "GPU pods released together"},
    priority={"type": "integer"}, priority_class=_STR, queued_at=_TIME, waited_s={"type": "number", "minimum": 0},
    reason={**_STR, "description": "why it waits"})

WORKLOAD_SCHEMAS: dict[str, Schema] = {
    "Workload": _exactly(
        kind={**_STR, "description": "its kind, or its resource.group for a kind the gateway has no name for"},
        namespace=_STR, name=_STR, owner=_STR, team=_STR, gpus=_COUNT,
        pods={**_COUNT, "description": "GPU pods at its recorded size"},
        state={"type": "string", "enum": [RUNNING, QUEUED]},
        since={**_TIME, "description": "running: when it was admitted or released from the queue; queued: "
                                       "when it was queued (RFC 3339, UTC)"}),
    "WorkloadList": {"type": "object", "required": ["items"], "additionalProperties": False,
                     "properties": {"items": {"type": "array", "items": ref("Workload")}}},
    "QueueItem": _QUEUE_ITEM,
    "QueueList": {"type": "object", "required": ["items"], "additionalProperties": False,
                  "properties": {"items": {"type": "array", "items": ref("QueueItem")}}},
    "WorkloadDetail": _exactly(
        kind=_STR, resource=_STR, namespace=_STR, name=_STR, owner=_STR, team=_STR,
        gpus={**_COUNT, "description": "GPUs of its reservation"}, pods=_COUNT,
        charged={"type": "boolean", "description": "whether its GPUs count against its owner's and team's quotas "
                                                   "(false for what controllers made from a charged workload)"},
        state={"type": "string", "enum": [RUNNING, QUEUED, RECORDED],
               "description": "recorded: in the ledger, holding no GPUs of its own"},
        since=_TIME, queue={"anyOf": [ref("QueueItem"), {"type": "null"}], "description": "its queue entry"},
        history={"type": "array", "items": ref("AuditRecord"), "description": "its newest audit records that the "
                                                                              "caller may read, oldest first"}),
}

_ERROR = json_content(ref("Error"))


def _params(*names: str) -> list[Schema]:
    what = {"user": "owner", "team": "team", "namespace": "namespace"}
    return [{"name": n, "in": "query", "required": False, "schema": _STR, "description": f"only this {what[n]}"}
            for n in names]


#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
WORKLOAD_PATHS: dict[str, Any] = {
    "/workloads": {"get": {
        "summary": "Workloads holding GPUs (charged) and waiting in the queue, scoped like the audit: the "
                   "caller's, their team's (audit-read at team), or all (audit-read at any)",
        "operationId": "workloadsList", "parameters": _params("user", "team", "namespace"),
        "responses": {"200": {"description": "By namespace and name", "content": json_content(ref("WorkloadList"))}},
    }},
    "/workloads/{kind}/{namespace}/{name}": {"get": {
        "summary": "One workload: owner, team, charges, queue position and reason, and its newest audit records",
        "operationId": "workloadDescribe",
        "parameters": [
            {"name": "kind", "in": "path", "required": True, "schema": _STR,
             "description": "kind or resource, any case: PyTorchJob, pytorchjobs, jobs.batch"},
            {"name": "namespace", "in": "path", "required": True, "schema": _STR},
            {"name": "name", "in": "path", "required": True, "schema": _STR},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": HISTORY},
             "description": "how many of its newest audit records"},
        ],
        "responses": {"200": {"description": "The workload", "content": json_content(ref("WorkloadDetail"))},
                      "400": {"description": "limit is not a number from 1 to 10000", "content": _ERROR},
                      "404": {"description": "The ledger holds no such workload the caller may see",
                              "content": _ERROR}},
    }},
    "/queue": {"get": {
        "summary": "Waiting workloads in queue order, as `gpu-gateway queue -o json` prints them, scoped like "
                   "the audit (positions are places in the whole queue)",
        "operationId": "queueList",
        "responses": {"200": {"description": "Queue order", "content": json_content(ref("QueueList"))}},
    }},
}
