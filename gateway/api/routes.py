"""Routes of /api/v1: authentication first, then the endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway.api.approvals import approval_routes
from gateway.api.audit import audit_routes
from gateway.api.check import check_routes
from gateway.api.context import ApiContext
from gateway.api.openapi import OPENAPI

PREFIX = "/api/v1"


def api_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The /api/v1 mount. Without an authenticator every endpoint but the OpenAPI document answers 503."""

    async def whoami(request: Request) -> Response:
        identity = await ctx.identity(request)
        if isinstance(identity, Response):
            return identity
        return JSONResponse({"username": identity.user, "groups": list(identity.groups),
                             "role": identity.role, "teams": list(identity.teams)})

    async def openapi(_: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [Mount(PREFIX, routes=[
        Route("/whoami", whoami, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *audit_routes(ctx),
        *approval_routes(ctx),
        *check_routes(ctx),
    ])]
