"""The command-line flags that several commands share, each group collected into one settings
argument (`auth=AuthSettings(...)`, `checkpoints=...`), and the store flags of read-only commands.

`option_group` is the one way a group is made: the flags, a function that builds the settings
from their values (a ConfigError becomes a usage error naming the problem), and the argument
the command receives instead of the separate values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from gateway.config import AgentAuthSettings, AuthSettings, CheckpointSettings, SchedulerSettings
from gateway.errors import ConfigError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def option_group(into: str, options: Sequence[Decorator], build: Callable[..., Any]) -> Decorator:
    """Add `options` to a command and pass it `into=build(**their values)` instead of them."""
    probe: Any = lambda: None  # noqa: E731 - only to read the options' parameter names
    for option in options:
        probe = option(probe)
    names = [param.name for param in probe.__click_params__]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            try:
                built = build(**values)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
            return command(*args, **{into: built}, **kwargs)

        decorated: Callable[..., Any] = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate


# ------------------------------------------------------------------ admin API authentication (serve)

_AUTH = [
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


def _auth(*, jwt_secret_file: Path | None, jwt_issuer: str | None, jwt_audience: str | None,
          oidc_issuer: str | None, oidc_audience: str | None, username_claims: tuple[str, ...],
          oidc_groups_claim: str, jwt_leeway: float) -> AuthSettings:
    return AuthSettings(jwt_secret_file=jwt_secret_file, jwt_issuer=jwt_issuer, jwt_audience=jwt_audience,
                        oidc_issuer=oidc_issuer, oidc_audience=oidc_audience,
                        username_claims=username_claims or AuthSettings.username_claims,
                        groups_claim=oidc_groups_claim, leeway_s=jwt_leeway)


#: The admin API's token flags, passed as `auth=AuthSettings(...)`.
auth_options = option_group("auth", _AUTH, _auth)


# ------------------------------------------------------------------ node agents' tokens (serve)

_AGENT_AUTH = [
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


def _agent_auth(*, agent_token_issuer: str | None, agent_token_audience: str | None, agent_token_ca: Path | None,
                agent_token_bearer_file: Path | None) -> AgentAuthSettings | None:
    if not (agent_token_issuer or agent_token_audience or agent_token_ca or agent_token_bearer_file):
        return None
    return AgentAuthSettings(issuer=agent_token_issuer or "", audience=agent_token_audience or "",
                             ca_file=agent_token_ca, bearer_token_file=agent_token_bearer_file)


#: The flags that let node agents authenticate with projected service-account tokens, passed as
#: `agent_auth=AgentAuthSettings(...)`, or None when none is given.
agent_auth_options = option_group("agent_auth", _AGENT_AUTH, _agent_auth)


# ------------------------------------------------------------------ signed audit checkpoints (serve)

_CHECKPOINTS = [
    click.option("--checkpoint-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                 help="Ed25519 key (from `gpu-gateway audit keygen`) that signs the audit chain's head; "
                      "keep it outside the database."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Append signed checkpoints to DIR/checkpoints.jsonl."),
    click.option("--checkpoint-interval", type=float, default=60.0, show_default=True, metavar="SECONDS",
                 help="Write a heartbeat record and sign the head this often (and once more at shutdown)."),
    click.option("--checkpoint-url", metavar="URL",
                 help="Also POST each checkpoint as JSON to this endpoint (a store outside the cluster's reach)."),
    click.option("--checkpoint-replica", metavar="NAME",
                 help="This replica's name in its checkpoints (default: the host name)."),
]


def _checkpoints(*, checkpoint_key: Path | None, checkpoint_dir: Path | None, checkpoint_interval: float,
                 checkpoint_url: str | None, checkpoint_replica: str | None) -> CheckpointSettings | None:
    if (checkpoint_key is None) != (checkpoint_dir is None):
        raise click.UsageError("--checkpoint-key and --checkpoint-dir go together")
    if checkpoint_key is None and (checkpoint_url or checkpoint_replica):
        raise click.UsageError("--checkpoint-url and --checkpoint-replica need --checkpoint-key")
    if checkpoint_key is None or checkpoint_dir is None:
        return None
    return CheckpointSettings(key_file=checkpoint_key, directory=checkpoint_dir, interval_s=checkpoint_interval,
                              url=checkpoint_url, replica=checkpoint_replica)


#: The checkpoint flags, passed as `checkpoints=CheckpointSettings(...)`, or None when off.
checkpoint_options = option_group("checkpoints", _CHECKPOINTS, _checkpoints)


# ------------------------------------------------------------------ the scheduler shim (serve, controller)

_SCHEDULER = [
    click.option("--service-account", envvar="GPU_GATEWAY_SERVICE_ACCOUNT", show_envvar=True,
                 default=SchedulerSettings.service_account, show_default=True, metavar="USERNAME",
                 help="The gateway's own Kubernetes identity: the only one that may remove the "
                      "gpu-gateway.io/quota scheduling gate."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                 help="Cluster access for the controller (default: in-cluster, then $KUBECONFIG or ~/.kube/config)."),
]
#: How the controller runs, in `controller` and in `serve --controller` alike.
_CONTROLLER_RUN = [
    click.option("--lease-namespace", default=SchedulerSettings.lease_namespace, show_default=True,
                 help="Namespace of the controller's Lease (one active replica holds it)."),
    click.option("--lease-name", default=SchedulerSettings.lease_name, show_default=True,
                 help="Name of the controller's Lease."),
    click.option("--interval", "interval_s", type=float, default=SchedulerSettings.interval_s, show_default=True,
                 metavar="SECONDS", help="Time between the controller's passes."),
    click.option("--forget-grace", "forget_grace_s", type=float, default=SchedulerSettings.forget_grace_s,
                 show_default=True, metavar="SECONDS",
                 help="A reservation whose object is not in the cluster is freed once it is this old "
                      "(an object refused after admission, a crash after the commit, a missed DELETE)."),
    click.option("--watch-webhook", "webhooks", multiple=True, metavar="KIND/NAME",
                 help="A webhook configuration of this installation to watch for drift (validating/NAME or "
                      "mutating/NAME; repeatable): an edit or deletion raises a metric, an Event and an audit record."),
    click.option("--webhook-generation", default="", metavar="DIGEST",
                 help="The installation's generation (the chart passes a digest of what it renders): a new "
                      "one records new webhook baselines instead of raising an alarm."),
]
_CONTROLLER = [
    click.option("--controller", is_flag=True,
                 help="Also run the queue controller (one active replica through a Lease; docs/scheduler.md); "
                      "implies --await-workload-listing."),
    click.option("--await-workload-listing", "await_listing", is_flag=True,
                 envvar="GPU_GATEWAY_AWAIT_WORKLOAD_LISTING", show_envvar=True,
                 help="A controller runs (`gpu-gateway controller`) and records the GPU workloads that predate "
                      "the gateway: until it has listed them, a /scale of a workload the ledger does not know "
                      "is refused (rule unowned-workload)."),
]


def scheduler_options(*, with_controller_flag: bool) -> Decorator:
    """The scheduler and controller flags, passed as `scheduler=SchedulerSettings(...)`; with
    `with_controller_flag`, also `--controller` (run the controller inside `serve`) and
    `--await-workload-listing`."""
    def build(*, service_account: str, kubeconfig: Path | None, controller: bool = True,
              await_listing: bool = False, webhooks: tuple[str, ...], **run: Any) -> SchedulerSettings:
        from gateway.scheduling.drift import split_target

        for target in webhooks:
            try:
                split_target(target)
            except ValueError as exc:
                raise ConfigError(f"--watch-webhook: {exc}") from None
        return SchedulerSettings(service_account=service_account, controller=controller, kubeconfig=kubeconfig,
                                 await_listing=await_listing or controller, webhooks=tuple(webhooks), **run)

    flags = [*_CONTROLLER, *_SCHEDULER] if with_controller_flag else _SCHEDULER
    return option_group("scheduler", [*flags, *_CONTROLLER_RUN], build)


# ------------------------------------------------------------------ where a read-only command reads the ledger


def store_source(command: Any) -> Any:
    """`--state PATH` or `--database-url URL`: where a read-only command finds the ledger."""
    command = click.option("--database-url", metavar="URL", help="PostgreSQL database (instead of --state).")(command)
    return click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
                        help="SQLite state file.")(command)
