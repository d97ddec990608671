"""Build the authenticator the settings ask for (or None when authentication is off)."""

from __future__ import annotations

from gateway.auth.oidc import OidcKeys
from gateway.auth.principal import ClaimMapping
from gateway.auth.secret import SharedSecret
from gateway.auth.validator import Authenticator
from gateway.config import AuthSettings


def build_authenticator(settings: AuthSettings) -> Authenticator | None:
    claims = ClaimMapping(username_claims=settings.username_claims, groups_claim=settings.groups_claim)
    if settings.jwt_secret_file is not None:
        assert settings.jwt_issuer and settings.jwt_audience  # AuthSettings checked the pairing
        return Authenticator(SharedSecret.from_file(settings.jwt_secret_file), issuer=settings.jwt_issuer,
                             audience=settings.jwt_audience, claims=claims, leeway_s=settings.leeway_s)
    if settings.oidc_issuer is not None:
        assert settings.oidc_audience
        return Authenticator(OidcKeys(settings.oidc_issuer), issuer=settings.oidc_issuer,
                             audience=settings.oidc_audience, claims=claims, leeway_s=settings.leeway_s)
    return None
