"""/api/v1/approvals and /api/v1/grants: two-person approvals and break-glass grants.

An approval lets one person do one action on one object once, after a different person
whose role may `approve` (policies/policy.csv) approved it; a grant gives a person a role for
a while (`grant`). The admission webhook applies both; every change here is audited. See
docs/approvals.md.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.context import ApiContext, error, json_body
from gateway.core.approvals import APPROVABLE_ACTIONS, SIZED_ACTIONS, may_grant, review_refusal
from gateway.core.identity import Identity
from gateway.errors import GatewayError
from gateway.store.approvals import NewApproval, NewGrant, StateConflict
from gateway.store.base import Actor, Store

MAX_APPROVAL_S = 7 * 24 * 3600
DEFAULT_APPROVAL_S = 3600
MAX_GRANT_S = 24 * 3600

Handler = Callable[[Request, Identity, Store], Awaitable[Response]]


class BadRequest(Exception):
    pass


def _actor(identity: Identity) -> Actor:
    return Actor(identity.user, identity.groups, identity.role or "")


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} must be a non-empty string")
    return value.strip()


def _seconds(body: dict[str, Any], key: str, default: float | None, most: float) -> float:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
        raise BadRequest(f"{key} must be a number of seconds above 0 and at most {most:g}")
    return float(value)


def _new_approval(body: dict[str, Any], identity: Identity) -> NewApproval:
    action = body.get("action")
    if action not in APPROVABLE_ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(APPROVABLE_ACTIONS)}")
    gpus = body.get("gpus", 0)
    if action in SIZED_ACTIONS and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise BadRequest(f"gpus (the most GPUs the {action} may ask for) must be a positive integer")
    return NewApproval(
        action=str(action), kind=_text(body, "kind"), namespace=_text(body, "namespace"), name=_text(body, "name"),
        gpus=int(gpus) if action in SIZED_ACTIONS else 0, reason=_text(body, "reason"),
        expires_in_s=_seconds(body, "expires_in_s", DEFAULT_APPROVAL_S, MAX_APPROVAL_S),
        requester_teams=identity.teams,
    )


def _new_grant(body: dict[str, Any], roles: tuple[str, ...]) -> NewGrant:
    role = body.get("role")
    if role not in roles:
        raise BadRequest(f"role must be one of {', '.join(roles)}")
    return NewGrant(user=_text(body, "user"), role=str(role), reason=_text(body, "reason"),
                    expires_in_s=_seconds(body, "expires_in_s", None, MAX_GRANT_S))


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def approval_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The approval and grant endpoints, for the /api/v1 mount."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            identity = await ctx.identity(request)
            if isinstance(identity, Response):
                return identity
            store = ctx.store
            if store is None:
                return error(503, "unavailable", "the gateway has no store")
            try:
                return await handler(request, identity, store)
            except BadRequest as exc:
                return error(400, "bad_request", str(exc))
            except KeyError as exc:
                return error(404, "not_found", f"no such approval or grant: {exc.args[0]}")
            except StateConflict as exc:
                return error(409, "conflict", exc.reason)
            except GatewayError as exc:
                return error(503, "unavailable", str(exc))
        return run

    def visible(identity: Identity, approval: dict[str, Any]) -> bool:
        return approval["requester"] == identity.user or review_refusal(
            ctx.policy(), identity, approval["requester"], approval["requester_teams"]) is None

    async def request_approval(request: Request, identity: Identity, store: Store) -> Response:
        new = _new_approval(await _json(request), identity)
        created = await run_in_threadpool(lambda: store.create_approval(new, _actor(identity), now=time.time()))
        return json_body(created, 201)

    async def list_approvals(_: Request, identity: Identity, store: Store) -> Response:
        rows = await run_in_threadpool(lambda: store.approvals(now=time.time()))
        return json_body({"items": [r for r in rows if visible(identity, r)]})

    async def get_approval(request: Request, identity: Identity, store: Store) -> Response:
        approval_id = request.path_params["id"]
        row = await run_in_threadpool(lambda: store.approval(approval_id, now=time.time()))
        if row is None or not visible(identity, row):
            raise KeyError(approval_id)
        return json_body(row)

    def review(verdict: str) -> Handler:
        async def decide(request: Request, identity: Identity, store: Store) -> Response:
            approval_id = request.path_params["id"]
            body = await _json(request) if await request.body() else {}
            comment = body.get("comment", "")
            if not isinstance(comment, str):
                raise BadRequest("comment must be a string")
            row = await run_in_threadpool(lambda: store.approval(approval_id, now=time.time()))
            if row is None:
                raise KeyError(approval_id)
            refusal = review_refusal(ctx.policy(), identity, row["requester"], row["requester_teams"])
            if refusal is not None:
                return error(403, "forbidden", refusal)
            done = await run_in_threadpool(
                lambda: store.review_approval(approval_id, verdict, _actor(identity), comment.strip(), now=time.time()))
            return json_body(done)
        return decide

    async def create_grant(request: Request, identity: Identity, store: Store) -> Response:
        if not may_grant(ctx.policy(), identity):
            return error(403, "forbidden", f"{identity.describe()} may not grant break-glass roles")
        new = _new_grant(await _json(request), ctx.policy().role_order)
        created = await run_in_threadpool(lambda: store.create_grant(new, _actor(identity), now=time.time()))
        return json_body(created, 201)

    async def list_grants(_: Request, identity: Identity, store: Store) -> Response:
        rows = await run_in_threadpool(lambda: store.grants(now=time.time()))
        if not may_grant(ctx.policy(), identity):
            rows = [r for r in rows if r["user"] == identity.user]
        return json_body({"items": rows})

    async def revoke_grant(request: Request, identity: Identity, store: Store) -> Response:
        if not may_grant(ctx.policy(), identity):
            return error(403, "forbidden", f"{identity.describe()} may not revoke break-glass grants")
        grant_id = request.path_params["id"]
        done = await run_in_threadpool(lambda: store.revoke_grant(grant_id, _actor(identity), now=time.time()))
        return json_body(done)

    return [
        Route("/approvals", endpoint(request_approval), methods=["POST"]),
        Route("/approvals", endpoint(list_approvals), methods=["GET"]),
        Route("/approvals/{id}", endpoint(get_approval), methods=["GET"]),
        Route("/approvals/{id}/approve", endpoint(review("approved")), methods=["POST"]),
        Route("/approvals/{id}/deny", endpoint(review("denied")), methods=["POST"]),
        Route("/grants", endpoint(create_grant), methods=["POST"]),
        Route("/grants", endpoint(list_grants), methods=["GET"]),
        Route("/grants/{id}", endpoint(revoke_grant), methods=["DELETE"]),
    ]


def _op(summary: str, op_id: str, ok: str, *codes: str, body: bool = False) -> dict[str, Any]:
    text = {"201": "Created", "400": "The body cannot be read or is invalid", "401": "The token is missing or invalid",
            "403": "The caller may not do this", "404": "No such approval or grant (or not visible to the caller)",
            "409": "Not pending (approvals) or not active (grants)",
            "503": "Authentication or the store is unavailable"}
    json_object = {"application/json": {"schema": {"type": "object"}}}
    op: dict[str, Any] = {"summary": summary, "operationId": op_id,
                          "responses": {ok: {"description": "OK", "content": json_object},
                                        **{c: {"description": text[c]} for c in codes}}}
    if body:
        op["requestBody"] = {"content": json_object}
    return op


#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
APPROVAL_PATHS: dict[str, Any] = {
    "/approvals": {
        "post": _op("Ask for a one-time exception {action, kind, namespace, name, gpus, reason, expires_in_s}",
                    "approvalCreate", "201", "400", "401", "503", body=True),
        "get": _op("Approvals the caller asked for or may review (admins: all)", "approvalList", "200", "401", "503"),
    },
    "/approvals/{id}": {"get": _op("One approval", "approvalGet", "200", "401", "404", "503")},
    "/approvals/{id}/approve": {"post": _op("Approve (never one's own; `approve` permission)", "approvalApprove",
                                            "200", "401", "403", "404", "409", "503", body=True)},
    "/approvals/{id}/deny": {"post": _op("Deny (never one's own; `approve` permission)", "approvalDeny",
                                         "200", "401", "403", "404", "409", "503", body=True)},
    "/grants": {
        "post": _op("Grant a break-glass role {user, role, reason, expires_in_s} (`grant` permission)", "grantCreate",
                    "201", "400", "401", "403", "503", body=True),
        "get": _op("Break-glass grants (granters: all; others their own)", "grantList", "200", "401", "503"),
    },
    "/grants/{id}": {"delete": _op("Revoke a grant", "grantRevoke", "200", "401", "403", "404", "409", "503")},
}
