"""What every /api/v1 endpoint needs: who is calling, the policy in force, the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.admission.identity import Identity, with_grants
from gateway.admission.policy import Policy, relation
from gateway.admission.ports import Actor
from gateway.auth import Authenticator
from gateway.auth.serviceaccount import TelemetryAuthenticator
from gateway.errors import AuthError, AuthUnavailable, GatewayError
from gateway.metrics import Metrics
from gateway.runtime import RuntimeSettings
from gateway.store.base import Store
from gateway.telemetry.settings import TelemetrySettings

_NOT_CONFIGURED = ("the admin API is off: no authentication is configured; start the gateway with "
                   "--oidc-issuer/--oidc-audience or --jwt-secret-file/--jwt-issuer/--jwt-audience")


def _challenge(reason: str) -> str:
    description = "".join(c if c.isprintable() and c not in '"\\' else "'" for c in reason)
    return f'Bearer realm="gpu-gateway", error="invalid_token", error_description="{description}"'


def refused(exc: AuthError) -> Response:
    if isinstance(exc, AuthUnavailable):
        return JSONResponse({"error": "unavailable", "reason": exc.reason}, status_code=503)
    return JSONResponse({"error": "invalid_token", "reason": exc.reason}, status_code=401,
                        headers={"WWW-Authenticate": _challenge(exc.reason)})


def error(status: int, code: str, reason: str) -> Response:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


@dataclass
class ApiContext:
    authenticator: Authenticator | None
    policy: Callable[[], Policy]
    """The policy in force (it is reloaded while the gateway runs)."""
    store: Store | None = None
    runtime: RuntimeSettings | None = None
    """Run-time settings (role bindings, quotas, a replaced policy), for the admin endpoints."""
    metrics: Metrics | None = None
    """The gateway's Prometheus metrics (telemetry counts its samples and alerts there)."""
    agent_authenticator: Authenticator | None = None
    """The node agents' service-account tokens (`serve --agent-token-issuer`): consulted only by
    the endpoints that ask for `agent=True` (POST /telemetry), never by the admin endpoints."""
    telemetry: Callable[[], TelemetrySettings] = TelemetrySettings
    """The telemetry settings in force (limits.yaml `telemetry`, reloaded with the policy), for
    POST /telemetry; without a bundle, the defaults (no rogue-pod eviction)."""

    async def identity(self, request: Request, *, agent: bool = False) -> Identity | Response:
        """The caller as a Kubernetes identity would be resolved (live break-glass grants
        included), or the response refusing them. With `agent`, a token of the agents' issuer
        is also accepted."""
        authenticator: Authenticator | TelemetryAuthenticator | None = self.authenticator
        if agent and self.agent_authenticator is not None:
            authenticator = TelemetryAuthenticator(self.agent_authenticator, self.authenticator)
        if authenticator is None:
            return error(503, "not_configured", _NOT_CONFIGURED)
        try:
            # Off the event loop: an OIDC key refetch is a blocking HTTP request.
            principal = await run_in_threadpool(authenticator.authenticate, request.headers.get("authorization"))
        except AuthError as exc:
            return refused(exc)
        policy = self.policy()
        identity = policy.identity(principal.username, principal.groups)
        if self.store is None:
            return identity
        store = self.store
        try:
            grants = await run_in_threadpool(lambda: store.live_grants(now=time.time()))
        except GatewayError as exc:
            return error(503, "unavailable", f"cannot read break-glass grants: {exc}")
        return with_grants(identity, grants, policy.role_order)

    def may(self, identity: Identity, action: str, owner: str, team: str) -> bool:
        """Whether the caller may do an API `action` on something of `owner` and `team`."""
        rel = relation(identity, owner, team)
        return rel == "own" or self.policy().may(identity.role, action, rel)

    def scope(self, identity: Identity, action: str) -> str | None:
        """The widest scope at which the caller may do `action` (own always)."""
        return self.policy().widest_scope(identity.role, action) or "own"


def json_body(payload: Any, status: int = 200) -> Response:
    return JSONResponse(payload, status_code=status)


class BadRequest(Exception):
    """A body or parameter the endpoint cannot use; answered 400 with the message."""


def actor(identity: Identity) -> Actor:
    """The caller as audit records of API changes name them."""
    return Actor(identity.user, identity.groups, identity.role or "")


def text_field(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} must be a non-empty string")
    return value.strip()


async def json_object(request: Request) -> dict[str, Any]:
    try:
        # orjson, unlike json, refuses lone surrogates ("\ud800"), which no database can store.
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
