"""Bearer JWT validation against a real local OIDC issuer and a shared HS256 secret: the attack set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from oidc_issuer import AUDIENCE, Issuer, SigningKey, hs256_token, unsigned_token

from gateway.auth import Authenticator, ClaimMapping, build_authenticator
from gateway.auth.oidc import OidcKeys
from gateway.auth.secret import SharedSecret
from gateway.config import AuthSettings
from gateway.errors import AuthUnavailable, ConfigError, InvalidToken

SECRET = b"s" * 48
LOCAL_ISS, LOCAL_AUD = "gpu-gateway-local", "gpuctl"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with Issuer() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def oidc(issuer: Issuer, clock: Clock) -> Authenticator:
    return Authenticator(OidcKeys(issuer.url, clock=clock), issuer=issuer.url, audience=AUDIENCE)


@pytest.fixture
def local() -> Authenticator:
    return Authenticator(SharedSecret(SECRET), issuer=LOCAL_ISS, audience=LOCAL_AUD)


def local_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": LOCAL_ISS, "aud": LOCAL_AUD, "sub": "bob", "groups": ["gpu-leads"],
                              "iat": now, "exp": now + 60}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def refused(auth: Authenticator, token: str, match: str) -> None:
    with pytest.raises(InvalidToken, match=match):
        auth.authenticate(f"Bearer {token}")


# -- accepted ----------------------------------------------------------------------------------------

def test_oidc_rs256_and_es256_tokens_name_the_user_and_groups(oidc: Authenticator, issuer: Issuer,
                                                              clock: Clock) -> None:
    principal = oidc.authenticate(f"Bearer {issuer.token()}")
    assert principal.username == "alice" and principal.groups == ("gpu-researchers", "team:vision")
    es = issuer.rotate("ec-1", "ES256")
    clock.now += 31
    assert oidc.validate(issuer.token(es, preferred_username=None)).username == "u-123"  # falls back to sub


def test_hs256_secret_and_an_empty_groups_list(local: Authenticator) -> None:
    principal = local.validate(jwt.encode(local_claims(groups=[]), SECRET, algorithm="HS256"))
    assert principal.username == "bob" and principal.groups == ()


def test_leeway_tolerates_small_clock_skew_only(local: Authenticator) -> None:
    now = int(time.time())
    local.validate(jwt.encode(local_claims(exp=now - 10, nbf=now + 10, iat=now + 10), SECRET, algorithm="HS256"))
    refused(local, jwt.encode(local_claims(exp=now - 60), SECRET, algorithm="HS256"), "has expired")
    refused(local, jwt.encode(local_claims(nbf=now + 120), SECRET, algorithm="HS256"), "not valid yet")
    refused(local, jwt.encode(local_claims(iat=now + 120), SECRET, algorithm="HS256"), "not valid yet")


def test_custom_claims() -> None:
    auth = Authenticator(SharedSecret(SECRET), issuer=LOCAL_ISS, audience=LOCAL_AUD,
                         claims=ClaimMapping(username_claims=("email",), groups_claim="roles"))
    token = jwt.encode(local_claims(email="carol@lab", roles=["gpu-admins"]), SECRET, algorithm="HS256")
    assert auth.validate(token).username == "carol@lab"


# -- refused -----------------------------------------------------------------------------------------

def test_missing_or_malformed_header(oidc: Authenticator) -> None:
    for header, match in [(None, "no bearer token"), ("", "no bearer token"), ("Basic YWxpY2U6eA==", "not 'Bearer"),
                          ("Bearer", "not 'Bearer"), ("Bearer not.a.jwt", "not a well-formed JWT"),
                          ("Bearer abc", "not a well-formed JWT"), ("Bearer " + "a" * 20000, "larger than")]:
        with pytest.raises(InvalidToken, match=match):
            oidc.authenticate(header)


def test_alg_none_is_refused_in_both_modes(oidc: Authenticator, local: Authenticator, issuer: Issuer) -> None:
    refused(oidc, unsigned_token(issuer.claims()), "algorithm 'none' is not accepted")
    refused(local, unsigned_token(local_claims()), "algorithm 'none' is not accepted")


def test_hs256_signed_with_the_rsa_public_key_is_refused(oidc: Authenticator, issuer: Issuer) -> None:
    key = issuer.keys[0]
    forged = hs256_token(key.public_pem(), issuer.claims(), {"alg": "HS256", "kid": key.kid, "typ": "JWT"})
    refused(oidc, forged, "algorithm 'HS256' is not accepted")


def test_rs256_is_refused_in_secret_mode(local: Authenticator, issuer: Issuer) -> None:
    token = jwt.encode(local_claims(), issuer.keys[0].private, algorithm="RS256")
    refused(local, token, "algorithm 'RS256' is not accepted")


def test_es256_header_on_an_rsa_key_is_refused(oidc: Authenticator, issuer: Issuer) -> None:
    impostor = SigningKey("key-1", "ES256")  # same kid as the issuer's RSA key
    refused(oidc, issuer.token(impostor), "does not match its signing key")


def test_expired_wrong_issuer_wrong_audience_bad_signature(oidc: Authenticator, issuer: Issuer) -> None:
    now = int(time.time())
    refused(oidc, issuer.token(exp=now - 3600), "has expired")
    refused(oidc, issuer.token(nbf=now + 3600), "not valid yet")
    refused(oidc, issuer.token(iss="https://evil.example"), "another issuer")
    refused(oidc, issuer.token(aud="someone-else"), "not for this audience")
    refused(oidc, issuer.token(exp=None), "no 'exp' claim")
    refused(oidc, issuer.token(aud=None), "no 'aud' claim")
    forger = SigningKey("key-1")  # right kid, wrong private key
    refused(oidc, issuer.token(forger), "signature does not verify")
    head, body, _ = issuer.token().split(".")
    tampered = issuer.token(preferred_username="mallory").split(".")[1]
    refused(oidc, f"{head}.{tampered}.{issuer.token().split('.')[2]}", "signature does not verify")
    assert body != tampered


def test_claims_that_name_no_one_or_no_groups(oidc: Authenticator, issuer: Issuer) -> None:
    refused(oidc, issuer.token(groups=None), "no 'groups' claim")
    refused(oidc, issuer.token(groups="gpu-admins"), "not a list of strings")
    refused(oidc, issuer.token(preferred_username=None, sub=None), "names no user")


def test_bad_signature_in_secret_mode(local: Authenticator) -> None:
    refused(local, jwt.encode(local_claims(), b"x" * 48, algorithm="HS256"), "signature does not verify")


# -- keys: discovery, rotation, rate limit --------------------------------------------------------------

def test_unknown_kid_is_refused_and_refetch_is_rate_limited(oidc: Authenticator, issuer: Issuer,
                                                            clock: Clock) -> None:
    oidc.validate(issuer.token())
    assert issuer.jwks_requests == 1
    stranger = SigningKey("nobody-knows")
    clock.now += 31
    refused(oidc, issuer.token(stranger), "kid 'nobody-knows'.* not published")
    assert issuer.jwks_requests == 2  # one refetch for the unknown kid
    for _ in range(5):
        clock.now += 1
        refused(oidc, issuer.token(stranger), "not published")
    assert issuer.jwks_requests == 2  # ... and no more within 30 s
    oidc.validate(issuer.token())  # known keys still work meanwhile
    assert issuer.jwks_requests == 2


def test_key_rotation_is_picked_up(oidc: Authenticator, issuer: Issuer, clock: Clock) -> None:
    oidc.validate(issuer.token())
    new = issuer.rotate("key-2")
    issuer.keys.pop(0)
    clock.now += 31
    assert oidc.validate(issuer.token(new)).username == "alice"
    assert issuer.jwks_requests == 2


def test_cached_keys_expire(issuer: Issuer, clock: Clock) -> None:
    keys = OidcKeys(issuer.url, clock=clock, max_age_s=600)
    auth = Authenticator(keys, issuer=issuer.url, audience=AUDIENCE)
    old = issuer.keys[0]
    auth.validate(issuer.token())
    issuer.keys = [SigningKey("key-2")]
    clock.now += 601
    refused(auth, issuer.token(old), "not published")  # the retired key is gone after max age


def test_discovery_must_name_the_configured_issuer(oidc: Authenticator, issuer: Issuer) -> None:
    issuer.discovery_override = {"issuer": "https://evil.example"}
    with pytest.raises(AuthUnavailable, match="names issuer 'https://evil"):
        oidc.validate(issuer.token())


def test_jwks_uri_on_another_origin_is_not_fetched(oidc: Authenticator, issuer: Issuer) -> None:
    issuer.discovery_override = {"jwks_uri": "http://127.0.0.2:9/keys"}
    with pytest.raises(AuthUnavailable, match="not on the issuer's origin"):
        oidc.validate(issuer.token())


def test_unreachable_issuer_is_unavailable_not_invalid(clock: Clock) -> None:
    with Issuer() as gone:
        url = gone.url
    auth = Authenticator(OidcKeys(url, clock=clock, timeout_s=1), issuer=url, audience=AUDIENCE)
    with pytest.raises(AuthUnavailable, match="could not be fetched"):
        auth.validate(jwt.encode({"iss": url}, SigningKey("k").private, algorithm="RS256", headers={"kid": "k"}))


# -- settings ----------------------------------------------------------------------------------------

def test_issuer_url_must_be_https_unless_loopback() -> None:
    with pytest.raises(ConfigError, match="must use https"):
        OidcKeys("http://idp.example.com")
    with pytest.raises(ConfigError, match="not an https URL"):
        OidcKeys("ftp://idp.example.com")
    OidcKeys("https://idp.example.com/realms/lab")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"oidc_issuer": "https://idp"}, "needs --oidc-audience"),
    ({"oidc_audience": "x"}, "needs --oidc-issuer"),
    ({"jwt_secret_file": Path("s")}, "needs both --jwt-issuer and --jwt-audience"),
    ({"jwt_issuer": "i"}, "need --jwt-secret-file"),
    ({"jwt_secret_file": Path("s"), "jwt_issuer": "i", "jwt_audience": "a", "oidc_issuer": "https://idp",
      "oidc_audience": "a"}, "exclusive"),
    ({"leeway_s": -1}, "leeway"),
])
def test_auth_settings_refuse_incomplete_modes(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AuthSettings(**kwargs)


def test_secret_file_must_exist_and_be_long_enough(tmp_path: Path) -> None:
    settings = AuthSettings(jwt_secret_file=tmp_path / "missing", jwt_issuer="i", jwt_audience="a")
    with pytest.raises(ConfigError, match="cannot read the JWT secret file"):
        build_authenticator(settings)
    (tmp_path / "short").write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(ConfigError, match="31 bytes; use at least 32"):
        build_authenticator(AuthSettings(jwt_secret_file=tmp_path / "short", jwt_issuer="i", jwt_audience="a"))
    assert build_authenticator(AuthSettings()) is None
