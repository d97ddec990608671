"""What telemetry needs from a store: its role and the result of an ingest. Pure:
`gateway.store` implements the protocol (gateway.store.telemetry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.admission.ports import Actor
from gateway.telemetry.alerts import Alert
from gateway.telemetry.samples import GpuSample
from gateway.telemetry.settings import TelemetrySettings


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alerts: list[Alert] = field(default_factory=list)


class TelemetryStore(Protocol):
    """GPU telemetry from the node agents (gateway.store.telemetry; docs/agent.md)."""

    def ingest_telemetry(self, samples: Sequence[GpuSample], *, reporter: Actor, settings: TelemetrySettings,
                         exempt_namespaces: frozenset[str], policy_version: str, now: float) -> IngestResult: ...

    def ingest_telemetry_many(self, reports: Sequence[tuple[Sequence[GpuSample], Actor]], *,
                              settings: TelemetrySettings, exempt_namespaces: frozenset[str], policy_version: str,
                              now: float) -> list[IngestResult]: ...

    def measured_usage(self, since: float, until: float) -> dict[str, dict[str, dict[str, Any]]]: ...

    def telemetry_samples(self, node: str | None = None) -> list[dict[str, Any]]: ...

    def record_eviction(self, fields: dict[str, Any], *, now: float) -> None: ...
