"""The telemetry settings. They come from the same bundle as the admission policy (limits.yaml
`telemetry`) and are held beside it (gateway.policy_bundle.PolicyHolder), but only telemetry
ingest and its alerts read them: admission never does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """limits.yaml `telemetry`: alert thresholds and the eviction switch (docs/agent.md)."""

    idle_utilization_pct: float = 5.0
    """A GPU at or below this utilisation is idle."""
    idle_after_s: float = 1800.0
    """An allocated GPU idle this long raises `idle-gpu` (once per idle stretch)."""
    collapse_min_pods: int = 4
    """Workloads with fewer reporting pods are never judged for a collapse."""
    collapse_fraction: float = 0.75
    """The share of a workload's pods that must collapse at once."""
    collapse_from_pct: float = 50.0
    """A pod collapses when it drops from at least this utilisation ..."""
    collapse_to_pct: float = 10.0
    """... to at most this, between two samples."""
    collapse_window_s: float = 120.0
    """Pods whose last sample is older than this are not counted."""
    evict_rogue_pods: bool = False
    """Evict the pod of a rogue GPU process (itself an audited privileged action)."""


_FIELDS = {
    "idle_utilization_pct": (0.0, 100.0), "idle_after_s": (0.0, 30 * 86400.0),
    "collapse_min_pods": (1, 1_000_000), "collapse_fraction": (0.01, 1.0), "collapse_from_pct": (0.0, 100.0),
    "collapse_to_pct": (0.0, 100.0), "collapse_window_s": (1.0, 86400.0),
}


def parse_telemetry_settings(raw: Any) -> TelemetrySettings:
    """Read limits.yaml `telemetry` (None: the defaults); ValueError naming the bad setting."""
    if raw is None:
        return TelemetrySettings()
    if not isinstance(raw, Mapping):
        raise ValueError("limits.yaml: telemetry must be a mapping")
    unknown = sorted(set(raw) - set(_FIELDS) - {"evict_rogue_pods"})
    if unknown:
        raise ValueError(f"limits.yaml: telemetry: unknown setting(s) {', '.join(map(str, unknown))}")
    values: dict[str, Any] = {}
    for name, (lo, hi) in _FIELDS.items():
        if name in raw:
            value = raw[name]
            ok = not isinstance(value, bool) and isinstance(value, int | float) and lo <= value <= hi
            if ok and isinstance(lo, int) and not isinstance(value, int):
                ok = False
            if not ok:
                raise ValueError(f"limits.yaml: telemetry.{name} must be a number from {lo} to {hi}, not {value!r}")
            values[name] = value
    if "evict_rogue_pods" in raw:
        if not isinstance(raw["evict_rogue_pods"], bool):
            raise ValueError("limits.yaml: telemetry.evict_rogue_pods must be true or false")
        values["evict_rogue_pods"] = raw["evict_rogue_pods"]
    settings = TelemetrySettings(**values)
    if settings.collapse_to_pct >= settings.collapse_from_pct:
        raise ValueError("limits.yaml: telemetry.collapse_to_pct must be below collapse_from_pct")
    return settings
