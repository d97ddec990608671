"""Keys of an OIDC issuer: discovery, JWKS, cache, rate-limited refetch on an unknown kid.

The only outbound requests go to the configured issuer's origin: the discovery document at
`<issuer>/.well-known/openid-configuration` and its `jwks_uri`, which must be on the same
scheme, host and port. Redirects are not followed. Token headers such as `jku`, `x5u` or
`jwk` are never used to find keys.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from gateway.errors import AuthUnavailable, ConfigError, InvalidToken
from gateway.net import is_loopback

log = logging.getLogger("gateway.auth")

#: What each accepted algorithm needs of a JWK: its key type and, for EC, its curve.
_KEY_TYPES: dict[str, tuple[str, str | None]] = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
MAX_DOCUMENT_BYTES = 1024 * 1024


def check_issuer_url(issuer: str) -> None:
    """https, or http on a loopback host (local trials and tests); no query or fragment."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"OIDC issuer {issuer!r} is not an https URL without query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(f"OIDC issuer {issuer!r} must use https (plain http only on a loopback host)")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _trust(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use {ca_file} as the issuer's CA: {getattr(exc, 'strerror', None) or exc}") from None


class _BearerFile(httpx.Auth):
    """`Authorization: Bearer <the file's content>`, read on every request (tokens rotate)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the bearer token file {self.path}: {exc.strerror or exc}") from None
        request.headers["authorization"] = f"Bearer {token}"
        yield request


class OidcKeys:
    """RS256/ES256 keys of one issuer, fetched lazily and cached.

    Refetched when a token names a kid the cache lacks (at most once per `min_refresh_s`,
    so unknown-kid tokens cannot make the gateway hammer the issuer) and when the cache is
    older than `max_age_s` (so retired keys stop being accepted).
    """

    algorithms: tuple[str, ...] = ("RS256", "ES256")

    def __init__(self, issuer: str, *, timeout_s: float = 5.0, min_refresh_s: float = 30.0,
                 max_age_s: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 client: httpx.Client | None = None, ca_file: Path | None = None,
                 bearer_token_file: Path | None = None, jwks_on_issuer_origin: bool = False) -> None:
        """`ca_file` and `bearer_token_file`: how to reach an issuer that is the Kubernetes API
        server (its CA; a token that may read its discovery document, re-read on every fetch so a
        rotated projected token is used). `jwks_on_issuer_origin`: fetch the path of `jwks_uri` on
        the issuer's own origin when the document names another one (the API server advertises
        its external address, which a pod may not reach and which is not the issuer's host)."""
        check_issuer_url(issuer)
        self.issuer = issuer
        self.min_refresh_s, self.max_age_s, self._clock = min_refresh_s, max_age_s, clock
        self.jwks_on_issuer_origin = jwks_on_issuer_origin
        auth = _BearerFile(bearer_token_file) if bearer_token_file is not None else None
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False, auth=auth,
                                              verify=_trust(ca_file))
        self._lock = threading.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        """When the keys were last fetched successfully."""
        self._tried_at: float | None = None
        """When a fetch was last attempted, successful or not (the rate limit)."""
        self._last_error = ""
        self.fetches = 0
        """JWKS fetches attempted (for tests and metrics)."""

    def key_for(self, header: Mapping[str, Any]) -> Any:
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the token's kid header is not a string")
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.max_age_s
            if (stale or not self._has(kid)) and self._may_fetch(now):
                self._refresh(now)
            if self._fetched_at is None:
                raise AuthUnavailable(f"the OIDC issuer's keys could not be fetched: {self._last_error}")
            jwk = self._find(kid)
        if jwk is None:
            shown = kid if kid is None or (len(kid) <= 64 and kid.isprintable()) else kid[:61] + "..."
            raise InvalidToken(f"the token's signing key (kid {shown!r}) is not published by the issuer")
        want_kty, want_crv = _KEY_TYPES[str(alg)]
        if jwk.get("kty") != want_kty or (want_crv and jwk.get("crv") != want_crv) \
                or jwk.get("alg", alg) != alg:
            raise InvalidToken(f"the token's algorithm {alg} does not match its signing key")
        try:
            return PyJWK(jwk, algorithm=str(alg)).key
        except PyJWKError:
            raise InvalidToken("the issuer's signing key for this token is unusable") from None

    def _has(self, kid: str | None) -> bool:
        return self._find(kid) is not None

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # A token without kid is only matched when the issuer publishes exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.min_refresh_s

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        self.fetches += 1
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discover()
            self._keys = self._fetch_keys(self._jwks_uri)
            self._fetched_at = now
            log.info("fetched %d signing keys from %s", len(self._keys), self._jwks_uri)
        except (httpx.HTTPError, ValueError, ConfigError) as exc:
            self._last_error = str(exc) or type(exc).__name__
            log.error("OIDC issuer %s: %s", self.issuer, self._last_error)

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._client.get(url, headers={"accept": "application/json"})
        if response.status_code != 200:
            raise ValueError(f"GET {url} answered HTTP {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"GET {url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        body = json.loads(response.content)
        if not isinstance(body, dict):
            raise ValueError(f"GET {url} did not answer a JSON object")
        return body

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url)
        if document.get("issuer") != self.issuer:
            raise ConfigError(f"the discovery document names issuer {document.get('issuer')!r}, "
                              f"not the configured {self.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ConfigError("the discovery document has no jwks_uri")
        if _origin(jwks_uri) != _origin(self.issuer) and self.jwks_on_issuer_origin:
            issuer = urlsplit(self.issuer)
            jwks_uri = f"{issuer.scheme}://{issuer.netloc}{urlsplit(jwks_uri).path or '/'}"
        if _origin(jwks_uri) != _origin(self.issuer):
            raise ConfigError(f"jwks_uri {jwks_uri!r} is not on the issuer's origin; refusing to fetch keys there")
        return jwks_uri

    def _fetch_keys(self, url: str) -> dict[str, dict[str, Any]]:
        keys = self._get_json(url).get("keys")
        if not isinstance(keys, list):
            raise ValueError(f"{url} is not a JWK set")
        usable = {}
        for jwk in keys:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") not in ("RSA", "EC"):
                continue
            usable[str(jwk.get("kid", ""))] = jwk
        if not usable:
            raise ValueError(f"{url} publishes no RSA or EC signing key")
        return usable
