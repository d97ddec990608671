"""Prometheus metrics of one gateway instance (its own registry, so tests can run several)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _TeamGpus(Collector):
    def __init__(self, source: Callable[[], dict[str, int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gpu_gateway_gpus_reserved", "GPUs reserved in the ledger, by team", labels=["team"]
        )
        try:
            for team, gpus in sorted(self._source().items()):
                family.add_metric([team], gpus)
        except Exception:  # a scrape must never fail because the store is down
            pass
        yield family


class _Queue(Collector):
    """Length and oldest wait of the GPU queue, from one read of its rows per scrape."""

    def __init__(self, rows: Callable[[], Sequence[Mapping[str, Any]]], clock: Callable[[], float]) -> None:
        self._rows, self._clock = rows, clock

    def collect(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("gpu_gateway_queue_length", "Workloads waiting in the GPU queue")
        oldest = GaugeMetricFamily("gpu_gateway_queue_oldest_age_seconds",
                                   "Seconds the longest-waiting workload has been queued (0 when none waits)")
        try:
            rows = self._rows()
            length.add_metric([], len(rows))
            arrivals = [float(r["arrival"]) for r in rows]
            oldest.add_metric([], max(self._clock() - min(arrivals), 0.0) if arrivals else 0.0)
        except Exception:  # a scrape must never fail because the store is down: no sample then
            pass
        yield length
        yield oldest


class CheckpointState(Protocol):
    """What the audit checkpointer tells /metrics (gateway.audit.signing.checkpointer.Checkpointer)."""

    failures: int

    def age_s(self) -> float: ...


class _Checkpoints(Collector):
    def __init__(self, source: CheckpointState) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gpu_gateway_audit_checkpoint_age_seconds",
            "Seconds since this replica last signed an audit checkpoint and published it to every sink "
            "(since it started, when none yet)", value=self._source.age_s())
        yield CounterMetricFamily(
            "gpu_gateway_audit_checkpoint_failures",
            "Audit checkpoints not written or not published to every sink", value=self._source.failures)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "gpu_gateway_decisions", "Admission decisions on governed actions",
            ["action", "decision", "rule"], registry=self.registry,
        )
        self.latency = Histogram(
            "gpu_gateway_request_seconds", "Time to answer an AdmissionReview",
            ["endpoint"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.errors = Counter(
            "gpu_gateway_errors", "Requests answered by the failure policy or refused as unreadable",
            ["kind"], registry=self.registry,
        )
        self.policy_reload_failures = Counter(
            "gpu_gateway_policy_reload_failures", "Policy bundle reloads that failed (last good kept)",
            registry=self.registry,
        )
        self.policy_loaded = Gauge(
            "gpu_gateway_policy_ok", "1 when the bundle on disk is the one in force", registry=self.registry,
        )
        self.telemetry_samples = Counter(
            "gpu_gateway_telemetry_samples", "GPU samples stored from node agents (resent duplicates excluded)",
            registry=self.registry,
        )
        self.telemetry_alerts = Counter(
            "gpu_gateway_telemetry_alerts", "Alerts raised from GPU telemetry (audit action alert)",
            ["kind"], registry=self.registry,
        )
        self.evictions = Counter(
            "gpu_gateway_rogue_evictions", "Evictions of pods running rogue GPU processes", ["outcome"],
            registry=self.registry,
        )

    def watch_team_gpus(self, source: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_TeamGpus(source))

    def watch_queue(self, rows: Callable[[], Sequence[Mapping[str, Any]]], *,
                    clock: Callable[[], float] = time.time) -> None:
        """`gpu_gateway_queue_length` and `gpu_gateway_queue_oldest_age_seconds` from the store's
        queue rows (the controller adds wait times and releases)."""
        self.registry.register(_Queue(rows, clock))

    def watch_checkpoints(self, checkpointer: CheckpointState) -> None:
        """The age of this replica's last signed audit checkpoint, and its failures."""
        self.registry.register(_Checkpoints(checkpointer))
