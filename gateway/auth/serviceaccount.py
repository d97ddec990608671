"""Kubernetes projected service-account tokens, for the node agents' telemetry endpoint only.

A projected token is a JWT of the cluster's service-account issuer with `sub` =
`system:serviceaccount:NS:NAME` and no `groups` claim. It is validated exactly as an admin API
token is (the same `Authenticator`: algorithm allow-list RS256/ES256, signature against the
issuer's JWKS, `exp`, `nbf`, `iat`, `iss`, `aud`), then given the groups Kubernetes itself gives
a service account. Only POST /api/v1/telemetry consults it (`TelemetryAuthenticator`): a token
of this issuer is refused everywhere else, because the admin authenticator does not trust it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.auth.oidc import OidcKeys
from gateway.auth.principal import Principal
from gateway.auth.validator import MAX_TOKEN_BYTES, Authenticator, bearer_token
from gateway.config import AgentAuthSettings, AuthSettings
from gateway.errors import ConfigError, InvalidToken

IN_CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
_PREFIX = "system:serviceaccount:"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    """The groups the API server gives every service account (as in its `userInfo`)."""
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")


@dataclass(frozen=True, slots=True)
class ServiceAccountClaims:
    """The principal of a projected token: `sub` names the account; the groups are derived."""

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str):
            sub = ""
        parts = sub[len(_PREFIX):].split(":") if sub.startswith(_PREFIX) else []
        if len(parts) != 2 or not all(parts):
            raise InvalidToken("the token's sub is not a service account (system:serviceaccount:NAMESPACE:NAME)")
        namespace, name = parts
        # The API server also writes both names into its private claim; they must agree.
        private = claims.get("kubernetes.io")
        if isinstance(private, Mapping):
            account = private.get("serviceaccount")
            if private.get("namespace") != namespace or (
                    isinstance(account, Mapping) and account.get("name") != name):
                raise InvalidToken("the token's kubernetes.io claim names another service account than its sub")
        return Principal(username=sub, groups=service_account_groups(namespace))


def build_agent_authenticator(settings: AgentAuthSettings | None, admin: AuthSettings) -> Authenticator | None:
    if settings is None:
        return None
    if settings.issuer in (admin.oidc_issuer, admin.jwt_issuer):
        raise ConfigError("--agent-token-issuer must differ from the admin API's issuer: tokens are routed "
                          "to an authenticator by their iss")
    ca_file = settings.ca_file
    if ca_file is None and IN_CLUSTER_CA.is_file():
        ca_file = IN_CLUSTER_CA
    if settings.bearer_token_file is not None and not settings.bearer_token_file.is_file():
        raise ConfigError(f"--agent-token-bearer-file {settings.bearer_token_file} is not a readable file")
    keys = OidcKeys(settings.issuer, ca_file=ca_file, bearer_token_file=settings.bearer_token_file,
                    jwks_on_issuer_origin=True)
    return Authenticator(keys, issuer=settings.issuer, audience=settings.audience, claims=ServiceAccountClaims(),
                         leeway_s=admin.leeway_s)


@dataclass
class TelemetryAuthenticator:
    """Routes a token by its (unverified) `iss`: the agents' issuer to `agent`, anything else to
    `admin`. The `iss` only picks the validator; the chosen one verifies everything."""

    agent: Authenticator
    admin: Authenticator | None

    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if self.admin is None or _unverified_issuer(token) == self.agent.issuer:
            return self.agent.validate(token)
        return self.admin.validate(token)


def _unverified_issuer(token: str) -> Any:
    """The `iss` a token claims, unchecked (only to pick a validator); None when unreadable."""
    if len(token) > MAX_TOKEN_BYTES:
        return None
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
