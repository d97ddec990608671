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

from gateway.admission.approvals import (
    APPROVABLE_ACTIONS,
    POLICY_CHANGE,
    SIZED_ACTIONS,
    deny_refusal,
    may_grant,
    past_team_caps,
    review_refusal,
)
from gateway.admission.identity import Identity
from gateway.admission.ports import NewApproval, NewGrant
from gateway.admission.quantity import MAX_GPUS
from gateway.api.context import ApiContext, BadRequest, actor, error, json_body, json_object, text_field
from gateway.api.schemas import json_content, ref
from gateway.errors import GatewayError
from gateway.store.approvals import StateConflict
from gateway.store.base import Store
from gateway.times import format_duration

MAX_APPROVAL_S = 7 * 24 * 3600
DEFAULT_APPROVAL_S = 3600
MAX_GRANT_S = 24 * 3600

Handler = Callable[[Request, Identity, Store], Awaitable[Response]]


def _seconds(body: dict[str, Any], key: str, default: float | None, most: float) -> float:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
        raise BadRequest(f"{key} must be above 0 and at most {most:g} seconds ({format_duration(most)})")
    return float(value)


def _new_approval(body: dict[str, Any], identity: Identity) -> NewApproval:
    action = body.get("action")
    if action not in APPROVABLE_ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(APPROVABLE_ACTIONS)}")
    gpus = body.get("gpus", 0)
    if action in SIZED_ACTIONS and (isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS):
        raise BadRequest(f"gpus (the most GPUs the {action} may ask for) must be an integer from 1 to {MAX_GPUS}")
    policy_change = action == POLICY_CHANGE
    return NewApproval(
        action=str(action), kind="Policy" if policy_change else text_field(body, "kind"),
        namespace="" if policy_change else text_field(body, "namespace"), name=text_field(body, "name"),
        gpus=int(gpus) if action in SIZED_ACTIONS else 0, reason=text_field(body, "reason"),
        expires_in_s=_seconds(body, "expires_in_s", DEFAULT_APPROVAL_S, MAX_APPROVAL_S),
        requester_teams=identity.teams,
    )


def _new_grant(body: dict[str, Any], roles: tuple[str, ...]) -> NewGrant:
    role = body.get("role")
    if role not in roles:
        raise BadRequest(f"role must be one of {', '.join(roles)}")
    return NewGrant(user=text_field(body, "user"), role=str(role), reason=text_field(body, "reason"),
                    expires_in_s=_seconds(body, "expires_in_s", None, MAX_GRANT_S))


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

    def refusal(verdict: str, identity: Identity, approval: dict[str, Any]) -> str | None:
        """Why `identity` may not approve (`verdict` "approved") or deny the approval, or None.
        A modify, kill or exec is checked against its workload's owner and team as recorded."""
        rule = review_refusal if verdict == "approved" else deny_refusal
        return rule(ctx.policy(), identity, approval["requester"], approval["requester_teams"], approval["action"],
                    target_owner=approval.get("target_owner"), target_team=approval.get("target_team") or "",
                    subject=f"{approval['kind']} {approval['namespace']}/{approval['name']}")

    def visible(identity: Identity, approval: dict[str, Any]) -> bool:
        return approval["requester"] == identity.user or refusal("denied", identity, approval) is None

    async def request_approval(request: Request, identity: Identity, store: Store) -> Response:
        new = _new_approval(await json_object(request), identity)
        created = await run_in_threadpool(lambda: store.create_approval(new, actor(identity), now=time.time()))
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
            body = await json_object(request) if await request.body() else {}
            comment = body.get("comment", "")
            if not isinstance(comment, str):
                raise BadRequest("comment must be a string")
            row = await run_in_threadpool(lambda: store.approval(approval_id, now=time.time()))
            if row is None:
                raise KeyError(approval_id)
            refused = refusal(verdict, identity, row)
            if refused is not None:
                return error(403, "forbidden", refused)
            done = await run_in_threadpool(
                lambda: store.review_approval(approval_id, verdict, actor(identity), comment.strip(), now=time.time()))
            if verdict == "approved":
                done["warnings"] = past_team_caps(ctx.policy(), done, await run_in_threadpool(store.gpus_by_team))
            return json_body(done)
        return decide

    async def create_grant(request: Request, identity: Identity, store: Store) -> Response:
        if not may_grant(ctx.policy(), identity):
            return error(403, "forbidden", f"{identity.describe()} may not grant break-glass roles")
        new = _new_grant(await json_object(request), ctx.policy().role_order)
        created = await run_in_threadpool(lambda: store.create_grant(new, actor(identity), now=time.time()))
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
        done = await run_in_threadpool(lambda: store.revoke_grant(grant_id, actor(identity), now=time.time()))
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


def _op(summary: str, op_id: str, ok: str, *codes: str, answer: str, body: dict[str, Any] | None = None,
        body_required: bool = True, example: dict[str, Any] | None = None) -> dict[str, Any]:
    text = {"201": "Created", "400": "The body cannot be read or is invalid",
            "403": "The caller may not do this", "404": "No such approval or grant (or not visible to the caller)",
            "409": "Not pending (approvals; to approve a modify, kill or exec, also: its workload has changed "
                   "owner or team since it was asked for) or not active (grants)"}
    op: dict[str, Any] = {"summary": summary, "operationId": op_id,
                          "responses": {ok: {"description": text.get(ok, "OK"), "content": json_content(ref(answer))},
                                        **{c: {"description": text[c]} for c in codes}}}
    if op_id.endswith(("Get", "Approve", "Deny", "Revoke")):
        op["parameters"] = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": json_content(body)}
        if example is not None:
            op["requestBody"]["content"]["application/json"]["example"] = example
    return op


_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
_APPROVAL_BODY = {
    "type": "object", "required": ["action", "name", "reason"], "properties": {
        "action": {"type": "string", "enum": list(APPROVABLE_ACTIONS)},
        "kind": {**_TEXT, "description": "required but for a policy change"},
        "namespace": {**_TEXT, "description": "required but for a policy change"}, "name": _TEXT,
        "gpus": {"type": "integer", "minimum": 1, "maximum": MAX_GPUS,
                 "description": "required for launch and modify: the most GPUs"},
        "reason": _TEXT,
        "expires_in_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_APPROVAL_S,
                         "default": DEFAULT_APPROVAL_S}}}
_REVIEW_BODY = {"type": "object", "properties": {"comment": {"type": "string", "description": "audited"}}}
_GRANT_BODY = {
    "type": "object", "required": ["user", "role", "reason", "expires_in_s"], "properties": {
        "user": _TEXT, "role": {"type": "string", "description": "one of the policy's roles"}, "reason": _TEXT,
        "expires_in_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_GRANT_S}}}

#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document, and
#: `schemas.complete` the 401 and 503 that every endpoint may answer).
APPROVAL_PATHS: dict[str, Any] = {
    "/approvals": {
        "post": _op("Ask for a one-time exception", "approvalCreate", "201", "400", answer="Approval",
                    body=_APPROVAL_BODY, example={"action": "launch", "kind": "PyTorchJob", "namespace": "research",
                                                  "name": "llm-400b", "gpus": 6144, "reason": "scaling run",
                                                  "expires_in_s": 3600}),
        "get": _op("Approvals the caller asked for or may review (admins: all)", "approvalList", "200",
                   answer="ApprovalList"),
    },
    "/approvals/{id}": {"get": _op("One approval", "approvalGet", "200", "404", answer="Approval")},
    "/approvals/{id}/approve": {"post": _op("Approve (never one's own; `approve`, and for a modify, kill or exec "
                                            "that action too, over the workload's owner); `warnings` says when "
                                            "the launch would take a team past its cap", "approvalApprove",
                                            "200", "400", "403", "404", "409", answer="Approval", body=_REVIEW_BODY,
                                            body_required=False, example={"comment": "ok, once"})},
    "/approvals/{id}/deny": {"post": _op("Deny (never one's own; `approve` permission)", "approvalDeny",
                                         "200", "400", "403", "404", "409", answer="Approval", body=_REVIEW_BODY,
                                         body_required=False)},
    "/grants": {
        "post": _op("Grant a break-glass role (`grant` permission)", "grantCreate", "201", "400", "403",
                    answer="Grant", body=_GRANT_BODY, example={"user": "ivan", "role": "lead",
                                                               "reason": "on-call: stuck job", "expires_in_s": 1800}),
        "get": _op("Break-glass grants (granters: all; others their own)", "grantList", "200", answer="GrantList"),
    },
    "/grants/{id}": {"delete": _op("Revoke a grant", "grantRevoke", "200", "403", "404", "409", answer="Grant")},
}
