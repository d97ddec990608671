"""POST /api/v1/check: what-if over HTTP, the same decisions `gpu-gateway check -o json` prints.

It decides with the policy in force against what the gateway's store holds now (usage, the
target's record, budgets, approvals), read and never written (gateway/whatif.py). Anyone may
check as themselves, in their own groups (or some of them); checking as another user, or in
groups one is not in, needs `audit-read` at `any` (administrators). A result shows the figures
of the caller's or the checked user's caps, as the gateway's own denial would; where the
ledger holds the target for someone whose records the caller may not read (as the audit
scopes them, gateway/api/audit.py `readable`), it says so without naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.api.audit import readable
from gateway.api.context import ApiContext, error, json_body
from gateway.errors import GatewayError
from gateway.whatif import ACTIONS, StoreView, flatten_documents, parse_documents, run_check


class BadCheck(ValueError):
    """The body of a check cannot be read."""


def _documents(manifest: Any) -> list[Mapping[str, Any]]:
    if isinstance(manifest, str):
        return parse_documents(manifest, "manifest")
    if isinstance(manifest, Mapping):
        return flatten_documents([manifest], "manifest")
    if isinstance(manifest, list):
        return flatten_documents(manifest, "manifest")
    raise BadCheck("manifest must be an object, a list of objects or a YAML/JSON string")


def _string(body: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise BadCheck(f"{key} must be a string")
    return value


def _groups(body: Mapping[str, Any]) -> tuple[str, ...]:
    groups = body.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise BadCheck("groups must be a list of strings")
    return tuple(groups)


def _read_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadCheck(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadCheck("the body must be a JSON object")
    if not _string(body, "user"):
        raise BadCheck("user is required")
    if "manifest" not in body:
        raise BadCheck("manifest is required")
    action = _string(body, "action", "launch")
    if action not in ACTIONS:
        raise BadCheck(f"action must be one of {', '.join(ACTIONS)}")
    return body


def _forbidden(ctx: ApiContext, identity: Identity, user: str, groups: tuple[str, ...]) -> Response | None:
    if ctx.scope(identity, "audit-read") == "any":
        return None
    if user != identity.user:
        return error(403, "forbidden", f"{identity.describe()} may only check as themselves, not as {user}; "
                                       "checking as another user needs audit-read on any (administrators)")
    others = sorted(set(groups) - set(identity.groups))
    if others:
        return error(403, "forbidden", f"{identity.describe()} may only check in their own groups, not in "
                                       f"{', '.join(others)}; checking in other groups needs audit-read on any "
                                       "(administrators)")
    return None


def check_routes(ctx: ApiContext) -> list[BaseRoute]:
    async def check(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        try:
            body = _read_body(await request.body())
            user, groups = str(body["user"]), _groups(body)
            refused = _forbidden(ctx, identity, user, groups)
            if refused is not None:
                return refused
            docs = _documents(body["manifest"])
            owner, owner_team = _string(body, "owner"), _string(body, "owner_team")
            namespace, policy = _string(body, "namespace"), ctx.policy()
            store = StoreView(ctx.store, "the gateway has no store")
            results = await run_in_threadpool(lambda: run_check(
                docs, policy=policy, user=user, groups=groups, action=str(body.get("action") or "launch"),
                owner=owner, owner_team=owner_team, namespace=namespace, store=store,
                may_read=lambda owner, team: readable(ctx, identity, {"owner": owner, "team": team})))
        except (BadCheck, GatewayError) as exc:
            return error(400, "bad_request", str(exc))
        return json_body({"results": results})

    return [Route("/check", check, methods=["POST"])]
