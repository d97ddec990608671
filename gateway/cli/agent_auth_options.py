"""The `serve` flags that let node agents authenticate with projected service-account tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.config import AgentAuthSettings
from gateway.errors import ConfigError

_OPTIONS = [
    click.option("--agent-token-issuer", metavar="URL",
                 help="POST /api/v1/telemetry only: accept projected service-account tokens of this issuer "
                      "(the cluster's --service-account-issuer, keys from its discovery document)."),
    click.option("--agent-token-audience", metavar="AUD", help="The aud the agents' projected tokens carry."),
    click.option("--agent-token-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="FILE",
                 help="CA of the issuer's TLS certificate (default: the in-cluster CA when present)."),
    click.option("--agent-token-bearer-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                 metavar="FILE", help="A token to present to the issuer when fetching its discovery document "
                                      "and keys (the gateway's own service-account token; re-read each fetch)."),
]


def agent_auth_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags to a click command and pass it `agent_auth=AgentAuthSettings(...) | None`."""

    @functools.wraps(command)
    def wrapper(*args: Any, agent_token_issuer: str | None, agent_token_audience: str | None,
                agent_token_ca: Path | None, agent_token_bearer_file: Path | None, **kwargs: Any) -> Any:
        agent_auth = None
        if agent_token_issuer or agent_token_audience or agent_token_ca or agent_token_bearer_file:
            try:
                agent_auth = AgentAuthSettings(issuer=agent_token_issuer or "", audience=agent_token_audience or "",
                                               ca_file=agent_token_ca, bearer_token_file=agent_token_bearer_file)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
        return command(*args, agent_auth=agent_auth, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated
