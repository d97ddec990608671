"""What the run-time settings endpoints share (/roles, /quotas, /policy; docs/admin.md): the
wrapper that authenticates and translates errors, who may manage, and reading and writing settings.

Role bindings and quotas changed there are stored, audited with the old and new value, and in
force on every replica within about a second (gateway.runtime). Anyone signed in may read
them; `manage` at scope `team` lets a lead set their own teams' quotas, at `any` everything else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admission.identity import Identity
from gateway.admission.overrides import SettingError
from gateway.admission.ports import SettingChange
from gateway.api.context import ApiContext, BadRequest, actor, error, json_body
from gateway.errors import GatewayError
from gateway.runtime import RuntimeSettings, overrides_of
from gateway.store.base import Store

Handler = Callable[[Request, Identity, Store, RuntimeSettings], Awaitable[Response]]


def endpoint(ctx: ApiContext, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """`handler` behind authentication, with the store and the run-time settings; a bad request
    answers 400, a store or authentication failure 503."""
    async def run(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        if ctx.store is None or ctx.runtime is None:
            return error(503, "unavailable", "the gateway has no store")
        try:
            return await handler(request, identity, ctx.store, ctx.runtime)
        except (BadRequest, SettingError) as exc:
            return error(400, "bad_request", str(exc))
        except GatewayError as exc:
            return error(503, "unavailable", str(exc))
    return run


def may_manage(ctx: ApiContext, identity: Identity, team: str = "") -> bool:
    policy = ctx.policy()
    if policy.may(identity.role, "manage", "any"):
        return True
    return bool(team) and team in identity.teams and policy.may(identity.role, "manage", "team")


async def refreshed(runtime: RuntimeSettings) -> None:
    """Read the settings now (a store read: off the event loop, as every store call here)."""
    await run_in_threadpool(runtime.refresh, time.time(), force=True)


async def stored(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run-time role bindings and quotas."""
    overrides, _ = overrides_of(await run_in_threadpool(store.settings))
    return dict(overrides.bindings), dict(overrides.quotas)


async def change(store: Store, runtime: RuntimeSettings, identity: Identity, setting: SettingChange) -> Response:
    """Store one setting change (audited) and answer it, in force here at once."""
    done = await run_in_threadpool(lambda: store.put_setting(setting, actor(identity), now=time.time()))
    await refreshed(runtime)
    return json_body(done)


# ------------------------------------------------------------------ OpenAPI


def op(summary: str, op_id: str, codes: str, *, body: Mapping[str, Any] | None = None,
        params: tuple[str, ...] = ()) -> dict[str, Any]:
    text = {"400": "The body or a parameter is invalid (`reason` says how)", "401": "The token is missing or invalid",
            "403": "The caller may not do this, or a second person must approve it first",
            "503": "Authentication or the store is unavailable"}
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    op: dict[str, Any] = {
        "summary": summary, "operationId": op_id,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{c: {"description": text[c], "content": error_body} for c in codes.split()}},
    }
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


REASON = {"reason": {"type": "string", "minLength": 1, "description": "Why; recorded in the audit log"}}
