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


@dataclass(frozen=True)
class StoreSettings:
    path: Path = Path("gpu-gateway.db")
    """SQLite state file: the ledger and the audit chain."""
    synchronous: str = "FULL"
    """SQLite `synchronous` pragma: FULL survives power loss; NORMAL is faster."""


@dataclass(frozen=True)
class PolicySettings:
    directory: Path | None = None
    """Policy bundle directory; None means the bundled `policies/`."""
    reload_interval_s: float = 2.0
    """How often the bundle's files are checked for changes (SIGHUP reloads at once)."""


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    failure_mode: FailureMode = FailureMode.CLOSED

    def __post_init__(self) -> None:
        if not 0 < self.server.port < 65536:
            raise ConfigError(f"port {self.server.port} is not a TCP port")
        if (self.server.cert_file is None) != (self.server.key_file is None):
            raise ConfigError("--cert and --key go together")
        if self.store.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError("store synchronous must be FULL, NORMAL or EXTRA")
        if self.server.max_body_bytes < 1024:
            raise ConfigError("max body size must be at least 1 KiB")
