"""Prometheus metrics of one gateway instance (its own registry, so tests can run several)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
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


class _QueueLength(Collector):
    def __init__(self, source: Callable[[], int]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("gpu_gateway_queue_length", "Workloads waiting in the GPU queue")
        with contextlib.suppress(Exception):  # a scrape must never fail because the store is down
            family.add_metric([], self._source())
        yield family


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

    def watch_queue(self, source: Callable[[], int]) -> None:
        """`gpu_gateway_queue_length` from the store (the controller adds wait times and releases)."""
        self.registry.register(_QueueLength(source))
