"""Routes of /api/v1: authentication first, then the endpoint."""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway.api.openapi import OPENAPI
from gateway.auth import Authenticator, Principal
from gateway.core.policy import Policy
from gateway.errors import AuthError, AuthUnavailable

PREFIX = "/api/v1"


def _challenge(reason: str) -> str:
    description = "".join(c if c.isprintable() and c not in '"\\' else "'" for c in reason)
    return f'Bearer realm="gpu-gateway", error="invalid_token", error_description="{description}"'


def _refused(exc: AuthError) -> Response:
    if isinstance(exc, AuthUnavailable):
        return JSONResponse({"error": "unavailable", "reason": exc.reason}, status_code=503)
    return JSONResponse({"error": "invalid_token", "reason": exc.reason}, status_code=401,
                        headers={"WWW-Authenticate": _challenge(exc.reason)})


_NOT_CONFIGURED = ("the admin API is off: no authentication is configured; start the gateway with "
                   "--oidc-issuer/--oidc-audience or --jwt-secret-file/--jwt-issuer/--jwt-audience")


def api_routes(authenticator: Authenticator | None, policy: Callable[[], Policy]) -> list[BaseRoute]:
    """The /api/v1 mount. Without an authenticator every endpoint but the OpenAPI document answers 503.

    `policy` returns the policy in force (it is reloaded while the gateway runs).
    """

    async def authenticate(request: Request) -> Principal | Response:
        if authenticator is None:
            return JSONResponse({"error": "not_configured", "reason": _NOT_CONFIGURED}, status_code=503)
        try:
            # Off the event loop: an OIDC key refetch is a blocking HTTP request.
            return await run_in_threadpool(authenticator.authenticate, request.headers.get("authorization"))
        except AuthError as exc:
            return _refused(exc)

    async def whoami(request: Request) -> Response:
        principal = await authenticate(request)
        if isinstance(principal, Response):
            return principal
        identity = policy().identity(principal.username, principal.groups)
        return JSONResponse({"username": identity.user, "groups": list(identity.groups),
                             "role": identity.role, "teams": list(identity.teams)})

    async def openapi(_: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [Mount(PREFIX, routes=[
        Route("/whoami", whoami, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ])]
