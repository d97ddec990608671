"""Routes of /api/v1: authentication first, then the endpoint."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from gateway.api.admin import admin_routes
from gateway.api.approvals import approval_routes
from gateway.api.audit import audit_routes
from gateway.api.check import check_routes
from gateway.api.context import ApiContext, error
from gateway.api.openapi import OPENAPI
from gateway.api.telemetry import telemetry_routes
from gateway.api.workloads import workload_routes
from gateway.errors import GatewayError

PREFIX = "/api/v1"


class _ApiMount(Mount):
    """The /api/v1 mount, matching every path under it: Starlette's `.*` stops at a newline, and a
    path it missed would get the server's plain-text 404 instead of the API's JSON one."""

    def __init__(self, path: str, app: Router) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    response = error(404, "not_found", f"no such endpoint: {scope.get('method', '')} {scope.get('path', '')}; "
                                       f"GET {PREFIX}/openapi.json lists them")
    await response(scope, receive, send)


def api_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The /api/v1 mount. Without an authenticator every endpoint but the OpenAPI document answers 503."""

    async def whoami(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        grants: list[dict[str, Any]] = []
        if ctx.store is not None:
            store = ctx.store
            try:
                rows = await run_in_threadpool(lambda: store.grants(now=time.time()))
            except GatewayError as exc:
                return error(503, "unavailable", f"cannot read break-glass grants: {exc}")
            grants = [{"id": g["id"], "role": g["role"], "expires_at": g["expires_at"], "reason": g["reason"],
                       "granter": g["granter"], "in_force": g["id"] == identity.grant}
                      for g in rows if g["user"] == identity.user and g["state"] == "active"]
        return JSONResponse({"username": identity.user, "groups": list(identity.groups),
                             "role": identity.role, "teams": list(identity.teams), "grants": grants})

    async def openapi(_: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [_ApiMount(PREFIX, app=Router(default=_not_found, routes=[
        Route("/whoami", whoami, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *audit_routes(ctx),
        *approval_routes(ctx),
        *check_routes(ctx),
        *telemetry_routes(ctx),
        *admin_routes(ctx),
        *workload_routes(ctx),
    ]))]
