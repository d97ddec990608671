"""Validate a bearer JWT: algorithm allow-list, signature, exp/nbf/iat, iss, aud, then claims."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from gateway.auth.principal import ClaimMapping, Principal, PrincipalReader
from gateway.errors import InvalidToken

log = logging.getLogger("gateway.auth")

MAX_TOKEN_BYTES = 16 * 1024


class KeySource(Protocol):
    """Where verification keys come from; it also fixes which algorithms are acceptable."""

    algorithms: tuple[str, ...]

    def key_for(self, header: Mapping[str, Any]) -> Any:
        """The key that must have signed a token with this (already allow-listed) header."""


@dataclass
class Authenticator:
    keys: KeySource
    issuer: str
    audience: str
    claims: PrincipalReader = field(default_factory=ClaimMapping)
    leeway_s: float = 30.0

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <jwt>` header, or InvalidToken."""
        return self.validate(bearer_token(authorization))

    def validate(self, token: str) -> Principal:
        try:
            principal = self._validate(token)
        except InvalidToken as exc:
            log.info("bearer token refused: %s", exc.reason)  # the reason, never the token
            raise
        return principal

    def _validate(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"the token is larger than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self.keys.algorithms:
            raise InvalidToken(f"token algorithm {_show(alg)} is not accepted here "
                               f"(accepted: {', '.join(self.keys.algorithms)})")
        key = self.keys.key_for(header)
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(self._explain(exc)) from None
        return self.claims.principal(claims)

    def _explain(self, exc: jwt.PyJWTError) -> str:
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "the token has expired; get a new one"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "the token is not valid yet (nbf or iat in the future); check the issuer's clock"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"the token has no {exc.claim!r} claim"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"the token is not for this audience (expected {self.audience!r})"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"the token is from another issuer (expected {self.issuer!r})"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "the token's signature does not verify"
        if isinstance(exc, jwt.InvalidIssuedAtError):
            return "the token's iat claim is not a number"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return "the token's algorithm is not accepted here"
        if isinstance(exc, jwt.DecodeError):
            return "the bearer token is not a well-formed JWT"
        return f"the token is invalid ({type(exc).__name__})"


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <jwt>` header, or InvalidToken."""
    if not authorization:
        raise InvalidToken("no bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header is not 'Bearer <token>'")
    return token.strip()


def _show(value: Any) -> str:
    """A header value, printable and short (it is attacker-controlled)."""
    text = repr(value)
    return text if len(text) <= 40 and text.isprintable() else repr(text[:37] + "...")
