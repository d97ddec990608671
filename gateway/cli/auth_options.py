"""The `serve` flags of admin API authentication, collected into one AuthSettings argument."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.config import AuthSettings
from gateway.errors import ConfigError

_OPTIONS = [
    click.option("--jwt-secret-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Admin API: accept HS256 tokens signed with this shared secret (at least 32 bytes; local use)."),
    click.option("--jwt-issuer", help="Admin API: the iss HS256 tokens must carry."),
    click.option("--jwt-audience", help="Admin API: the aud HS256 tokens must carry."),
    click.option("--oidc-issuer", metavar="URL",
                 help="Admin API: accept RS256/ES256 tokens of this OIDC issuer (keys from its discovery document)."),
    click.option("--oidc-audience", help="Admin API: the aud OIDC tokens must carry (the client id)."),
    click.option("--oidc-username-claim", "username_claims", multiple=True, metavar="CLAIM",
                 help="Claim holding the username (repeatable, first present wins; default preferred_username, sub)."),
    click.option("--oidc-groups-claim", default="groups", show_default=True, metavar="CLAIM",
                 help="Claim holding the groups (a list of strings; a token without it is refused)."),
    click.option("--jwt-leeway", type=float, default=30.0, show_default=True, metavar="SECONDS",
                 help="Clock skew tolerated on exp, nbf and iat."),
]


def auth_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags to a click command and pass it `auth=AuthSettings(...)` instead."""

    @functools.wraps(command)
    def wrapper(*args: Any, jwt_secret_file: Path | None, jwt_issuer: str | None, jwt_audience: str | None,
                oidc_issuer: str | None, oidc_audience: str | None, username_claims: tuple[str, ...],
                oidc_groups_claim: str, jwt_leeway: float, **kwargs: Any) -> Any:
        try:
            auth = AuthSettings(jwt_secret_file=jwt_secret_file, jwt_issuer=jwt_issuer, jwt_audience=jwt_audience,
                                oidc_issuer=oidc_issuer, oidc_audience=oidc_audience,
                                username_claims=username_claims or AuthSettings.username_claims,
                                groups_claim=oidc_groups_claim, leeway_s=jwt_leeway)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        return command(*args, auth=auth, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated
