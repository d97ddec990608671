"""/api/v1/audit and /api/v1/usage: who did what, and who holds which GPUs now.

Everyone reads their own records (as requester or as owner of the target); the `audit-read`
permission widens that to the caller's teams or to everything (policies/policy.csv).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.admission.policy import Policy
from gateway.api.context import ApiContext, error, json_body
from gateway.api.telemetry import scoped_measured
from gateway.audit.ports import AuditQuery
from gateway.telemetry.usage_report import BY, usage_csv
from gateway.times import parse_time, with_time

_FILTERS = ("user", "action", "decision", "kind", "namespace", "name")


def _integer(params: Mapping[str, str], key: str) -> int | None:
    if key not in params:
        return None
    try:
        return int(params[key])
    except ValueError:
        raise ValueError(f"{key} must be an integer, not {params[key]!r}") from None


def _query(request: Request) -> AuditQuery | Response:
    params = request.query_params
    try:
        limit = _integer(params, "limit")
        after = _integer(params, "after")
        since = parse_time(params["since"]) if "since" in params else None
        until = parse_time(params["until"]) if "until" in params else None
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    if limit is not None and limit < 1:
        return error(400, "bad_request", "limit must be a positive integer")
    if after is not None and not 0 <= after < 2**63:
        return error(400, "bad_request", "after must be a sequence number (0 or more)")
    return AuditQuery(since=since, until=until, limit=None, after=after,
                      **{k: params[k] for k in _FILTERS if params.get(k)})


#: The last time `since` and `until` may name (year 9999).
_LAST_TIME = 253402300799.0


def _wants_csv(request: Request) -> bool:
    """`format=csv`, or `text/csv` accepted and JSON not; `format` wins over `Accept`."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt not in ("json", "csv"):
            raise ValueError("format must be json or csv")
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def readable(ctx: ApiContext, identity: Identity, row: Mapping[str, Any]) -> bool:
    """Whether the caller may read `row`: an audit record, or a workload or queue entry (`owner`,
    `team`). One's own (as requester or owner) always; others' by `audit-read` at their scope.
    Every endpoint that shows who holds or did what scopes by this."""
    if row.get("user") == identity.user:
        return True
    return ctx.may(identity, "audit-read", str(row.get("owner") or ""), str(row.get("team") or ""))


def _scoped(values: dict[str, Any], identity: Identity, scope: str | None, kind: str) -> dict[str, Any]:
    """What of a per-user, per-team or per-role breakdown the caller may see."""
    if scope == "any":
        return values
    if kind == "users":
        return {k: v for k, v in values.items() if k == identity.user}
    if kind == "teams" and scope in ("team", "team-shared"):
        return {k: v for k, v in values.items() if k in identity.teams}
    return {}


def _limits(policy: Policy, identity: Identity, users: Mapping[str, int], teams: Mapping[str, int],
            roles: Mapping[str, str]) -> dict[str, dict[str, int | None]]:
    """The concurrent cap of each user and team shown (None: unlimited): the caller's by their
    role now, another user's by the role the ledger recorded with their newest reservation."""
    return {"users": {u: policy.user_cap(u, identity.role if u == identity.user else roles.get(u)) for u in users},
            "teams": {t: policy.team_cap(t) for t in teams}}


def audit_routes(ctx: ApiContext) -> list[BaseRoute]:
    async def rows(request: Request) -> tuple[Identity, list[dict[str, Any]]] | Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        if ctx.store is None:
            return error(503, "unavailable", "no store is attached to the admin API")
        query = _query(request)
        if isinstance(query, Response):
            return query
        found = await run_in_threadpool(lambda: list(ctx.store.audit_rows(query)) if ctx.store else [])
        visible = [with_time(r) for r in found if readable(ctx, identity, r)]
        limit = request.query_params.get("limit")
        return identity, visible[-int(limit):] if limit else visible

    async def audit_list(request: Request) -> Response:
        got = await rows(request)
        if isinstance(got, Response):
            return got
        return json_body({"items": got[1]})

    async def audit_export(request: Request) -> Response:
        got = await rows(request)
        if isinstance(got, Response):
            return got

        def lines() -> Iterator[bytes]:
            for row in got[1]:
                yield orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def audit_verify(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        if ctx.scope(identity, "audit-read") != "any":
            return error(403, "forbidden", f"{identity.describe()} may not verify the whole audit log; "
                                           "ask an administrator")
        if ctx.store is None:
            return error(503, "unavailable", "no store is attached to the admin API")
        result = await run_in_threadpool(ctx.store.verify)
        return json_body({"ok": result.ok, "records": result.rows, "first_bad": result.first_bad,
                          "problem": result.problem}, status=200)

    async def usage(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        if ctx.store is None:
            return error(503, "unavailable", "no store is attached to the admin API")
        params = request.query_params
        try:
            until = parse_time(params["until"]) if "until" in params else time.time()
            since = parse_time(params["since"]) if "since" in params else None
            as_csv = _wants_csv(request)
            by = params.get("by") or None
            if by is not None and by not in BY:
                raise ValueError(f"by must be one of {', '.join(BY)}")
        except ValueError as exc:
            return error(400, "bad_request", str(exc))
        if not all(0 <= t <= _LAST_TIME for t in (since or 0, until)) or (since is not None and since > until):
            return error(400, "bad_request", "since and until must be times from 1970 on, since before until")
        store = ctx.store
        users, teams, roles = await run_in_threadpool(
            lambda: (store.gpus_by_user(), store.gpus_by_team(), store.owner_roles()))
        scope = ctx.scope(identity, "audit-read")
        body: dict[str, Any] = {"users": _scoped(users, identity, scope, "users"),
                                "teams": _scoped(teams, identity, scope, "teams")}
        body["limits"] = _limits(ctx.policy(), identity, body["users"], body["teams"], roles)
        if since is not None:
            hours = await run_in_threadpool(lambda: store.gpu_hours(since, until))
            body["gpu_hours"] = {"since": since, "until": until,
                                 **{k: _scoped(v, identity, scope, k) for k, v in hours.items()}}
            measured = await run_in_threadpool(lambda: store.measured_usage(since, until))
            body["measured"] = {"since": since, "until": until, **scoped_measured(measured, identity, scope)}
        if as_csv:
            return Response(usage_csv(body, by), media_type="text/csv; charset=utf-8",
                            headers={"content-disposition": 'inline; filename="gpu-usage.csv"'})
        return json_body(body)

    return [
        Route("/audit", audit_list, methods=["GET"]),
        Route("/audit/export", audit_export, methods=["GET"]),
        Route("/audit/verify", audit_verify, methods=["GET"]),
        Route("/usage", usage, methods=["GET"]),
    ]
