"""Settings: one typed object built once at start and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from gateway.errors import ConfigError


class FailureMode(StrEnum):
    """What a GPU request gets when the gateway itself fails (store down, internal error)."""

    CLOSED = "closed"
    """Deny it (the safe default for a cluster worth protecting)."""
    OPEN = "open"
    """Allow it with a warning, audit nothing (the ledger is unavailable)."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8443
    insecure_http: bool = False
    """Serve plain HTTP (only for local trials; the API server requires TLS)."""
    cert_file: Path | None = None
    key_file: Path | None = None
    """TLS pair; when both are unset a self-signed pair is generated beside the state file."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Larger AdmissionReview bodies are refused (HTTP 413): above the API server's own limits."""
    decision_budget_ms: int = 2000
    """Every /validate is answered within this (the failure policy once the store is late), plus
    at most a quarter more when its commit is under way: keep 1.25x it below the smallest
    `timeoutSeconds` of the webhooks that call /validate (docs/faults.md)."""
    shutdown_delay_s: float = 0.0
    """On SIGTERM, /readyz fails at once and requests are still served this long before the
    listener closes and in-flight requests drain (let the endpoints controller notice first)."""


@dataclass(frozen=True)
class StoreSettings:
    path: Path = Path("gpu-gateway.db")
    """SQLite state file: the ledger and the audit chain."""
    synchronous: str = "FULL"
    """SQLite `synchronous` pragma: FULL survives power loss; NORMAL is faster."""
    database_url: str | None = None
    """PostgreSQL URL shared by several replicas; when set it replaces the SQLite state file,
    and `path` only places the history key (and a self-signed TLS pair) beside it."""


@dataclass(frozen=True)
class PolicySettings:
    directory: Path | None = None
    """Policy bundle directory; None means the bundled `policies/`."""
    reload_interval_s: float = 2.0
    """How often the bundle's files are checked for changes (SIGHUP reloads at once)."""


@dataclass(frozen=True)
class AuthSettings:
    """Bearer-token authentication of the admin API (/api/v1); see docs/auth.md.

    At most one mode: a shared HS256 secret (local use) or an OIDC issuer (RS256/ES256).
    With neither, /api/v1 answers 503 and the admission endpoints are unaffected.
    """

    jwt_secret_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    username_claims: tuple[str, ...] = ("preferred_username", "sub")
    """The first of these claims that holds a non-empty string is the username."""
    groups_claim: str = "groups"
    """A list of strings; a token without it is refused (an empty list is no groups)."""
    leeway_s: float = 30.0
    """Clock skew tolerated on exp, nbf and iat."""

    @property
    def enabled(self) -> bool:
        return self.jwt_secret_file is not None or self.oidc_issuer is not None

    def __post_init__(self) -> None:
        if self.jwt_secret_file is not None and self.oidc_issuer is not None:
            raise ConfigError("--jwt-secret-file and --oidc-issuer are exclusive: pick one authentication mode")
        if self.jwt_secret_file is None and (self.jwt_issuer or self.jwt_audience):
            raise ConfigError("--jwt-issuer and --jwt-audience need --jwt-secret-file")
        if self.jwt_secret_file is not None and not (self.jwt_issuer and self.jwt_audience):
            raise ConfigError("--jwt-secret-file needs both --jwt-issuer and --jwt-audience")
        if self.oidc_issuer is None and self.oidc_audience:
            raise ConfigError("--oidc-audience needs --oidc-issuer")
        if self.oidc_issuer is not None and not self.oidc_audience:
            raise ConfigError("--oidc-issuer needs --oidc-audience (the client id tokens are issued for)")
        if not self.username_claims or not all(self.username_claims) or not self.groups_claim:
            raise ConfigError("username and groups claim names must not be empty")
        if not 0 <= self.leeway_s <= 300:
            raise ConfigError("JWT leeway must be between 0 and 300 seconds")


@dataclass(frozen=True)
class AgentAuthSettings:
    """Projected service-account tokens of the node agents, accepted on POST /api/v1/telemetry only
    (docs/agent.md): the cluster's service-account issuer, trusted through its discovery and JWKS."""

    issuer: str
    """The cluster's service-account issuer (`kube-apiserver --service-account-issuer`)."""
    audience: str
    """The audience the agents' projected tokens are requested for."""
    ca_file: Path | None = None
    """CA of the issuer's TLS certificate; None: the in-cluster CA when present, else the system's."""
    bearer_token_file: Path | None = None
    """A token sent to the issuer (the API server serves discovery to authenticated callers)."""

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ConfigError("--agent-token-issuer and --agent-token-audience go together")


@dataclass(frozen=True)
class CheckpointSettings:
    """Signed checkpoints of the audit chain (docs/audit.md); the key never goes into the database."""

    key_file: Path
    """Ed25519 private key (PEM), from `gpu-gateway audit keygen`."""
    directory: Path
    """The local append-only sink: `checkpoints.jsonl` in this directory."""
    interval_s: float = 60.0
    """How often a heartbeat is written and the head signed (and once more at shutdown)."""
    url: str | None = None
    """An external sink: each checkpoint is POSTed there as JSON."""
    replica: str | None = None
    """This replica's name in its checkpoints; None means the host name."""

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= 86400:
            raise ConfigError("--checkpoint-interval must be between 0 and 86400 seconds")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError("--checkpoint-url must be an http:// or https:// URL")


@dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler shim (docs/scheduler.md): who the gateway is, and whether `serve` runs the controller."""

    service_account: str = "system:serviceaccount:gpu-gateway:gpu-gateway"
    """The gateway's own identity: the only one that may remove the queue's scheduling gate
    (`--service-account`, GPU_GATEWAY_SERVICE_ACCOUNT)."""
    controller: bool = False
    """Run the controller inside `serve` (one active replica through the Lease)."""
    kubeconfig: Path | None = None
    """Cluster access for the controller; default: in-cluster service account, then ~/.kube/config."""
    await_listing: bool = False
    """A controller records the GPU workloads that predate the gateway (`--await-workload-listing`;
    set by `controller`): until it has listed a kind, `serve` refuses a `/scale` of a workload of
    that kind the ledger does not know (gateway/scheduling/roots.py)."""
    lease_namespace: str = "gpu-gateway"
    """Where the controller's Lease lives (one active replica holds it)."""
    lease_name: str = "gpu-gateway-controller"
    interval_s: float = 2.0
    """Time between the controller's passes."""
    forget_grace_s: float = 30.0
    """A reservation whose object is not in the cluster is freed once it is this old."""
    webhooks: tuple[str, ...] = ()
    """Webhook configurations of this installation to watch for drift (`validating/NAME`, `mutating/NAME`)."""
    webhook_generation: str = ""
    """The installation's generation: a new one records new webhook baselines instead of an alarm."""

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError("--interval must be more than 0 seconds")
        if self.forget_grace_s < 0:
            raise ConfigError("--forget-grace must be 0 seconds or more")


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    failure_mode: FailureMode = FailureMode.CLOSED
    checkpoints: CheckpointSettings | None = None
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    agent_auth: AgentAuthSettings | None = None
    """Node agents' service-account tokens on the telemetry endpoint; None: the admin authenticator only."""

    def __post_init__(self) -> None:
        if not 0 < self.server.port < 65536:
            raise ConfigError(f"port {self.server.port} is not a TCP port")
        if (self.server.cert_file is None) != (self.server.key_file is None):
            raise ConfigError("--cert and --key go together")
        if self.store.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError("store synchronous must be FULL, NORMAL or EXTRA")
        if self.store.database_url is not None and not self.store.database_url.startswith(
                ("postgresql://", "postgres://")):
            raise ConfigError("--database-url must be a postgresql:// URL")
        if not 50 <= self.server.decision_budget_ms <= 30_000:
            raise ConfigError("--decision-budget-ms must be between 50 and 30000")
        if not 0 <= self.server.shutdown_delay_s <= 300:
            raise ConfigError("--shutdown-delay must be between 0 and 300 seconds")
        if self.server.max_body_bytes < 1024:
            raise ConfigError("max body size must be at least 1 KiB")
