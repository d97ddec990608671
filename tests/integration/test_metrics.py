"""What /metrics says about the GPU queue and the audit checkpoints, read as Prometheus reads it
(the text format, parsed by prometheus_client's own parser): a real SQLite store with workloads
queued through the real AdmissionService, a real checkpointer with a file sink and a loopback
HTTP sink, and a real `gpu-gateway serve` with checkpoints on."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from builders_queue import launch_job, queue_policies
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from served import start_server, stop_server

from gateway.audit.signing.checkpointer import Checkpointer, FileSink, HttpSink, generate_key, load_private_key
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> dict[str, float]:
    """Every sample of the registry by name, as a scraper parses /metrics."""
    text = generate_latest(metrics.registry).decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_queue_reports_its_length_and_how_long_the_oldest_workload_has_waited(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    clock = Clock()
    service = AdmissionService(PolicyHolder(queue_policies(tmp_path / "policies")), store, metrics=Metrics(),
                               clock=clock)
    metrics = Metrics()
    metrics.watch_queue(store.queue_rows, clock=clock)
    try:
        assert scrape(metrics)["gpu_gateway_queue_oldest_age_seconds"] == 0.0  # nothing waits
        launch_job(service, "first", pods=2)
        clock.now += 300
        launch_job(service, "second", pods=1)
        clock.now += 600
        samples = scrape(metrics)
        assert samples["gpu_gateway_queue_length"] == 2
        assert samples["gpu_gateway_queue_oldest_age_seconds"] == 900.0  # "first", queued at T0
    finally:
        store.close()


def test_a_scrape_with_the_store_down_still_answers_without_queue_samples(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    metrics = Metrics()
    metrics.watch_queue(store.queue_rows)
    store.close()
    samples = scrape(metrics)
    assert "gpu_gateway_queue_length" not in samples and "gpu_gateway_queue_oldest_age_seconds" not in samples
    assert "gpu_gateway_policy_ok" in samples  # the rest of the scrape is whole


def test_checkpoint_age_counts_from_the_last_checkpoint_every_sink_took(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    key = tmp_path / "checkpoint.key"
    generate_key(key)
    with socket.socket() as s:  # a loopback port nobody listens on: the external sink is down
        s.bind(("127.0.0.1", 0))
        dead = HttpSink(f"http://127.0.0.1:{s.getsockname()[1]}/x", timeout_s=1)
    clock = Clock()
    signer = Checkpointer(store, load_private_key(key), [FileSink(tmp_path / "cp")], replica="gw-0",
                          interval_s=60, clock=clock)
    metrics = Metrics()
    metrics.watch_checkpoints(signer)
    try:
        clock.now += 45
        assert scrape(metrics)["gpu_gateway_audit_checkpoint_age_seconds"] == 45.0  # none yet: since start
        signer.checkpoint()
        assert scrape(metrics)["gpu_gateway_audit_checkpoint_age_seconds"] == 0.0
        clock.now += 90
        assert scrape(metrics)["gpu_gateway_audit_checkpoint_age_seconds"] == 90.0
        signer.sinks.append(dead)  # signed and kept in the file, but the sink outside the cluster missed it
        clock.now += 60
        assert signer.checkpoint().failed == (dead.name,)
        samples = scrape(metrics)
        assert samples["gpu_gateway_audit_checkpoint_age_seconds"] == 150.0
        assert samples["gpu_gateway_audit_checkpoint_failures_total"] == 1
    finally:
        dead.close()
        store.close()


def test_serve_with_checkpoints_exports_their_age(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "checkpoint.key"
    generate_key(key)
    served = start_server(tmp_path, "--checkpoint-key", str(key), "--checkpoint-dir", str(tmp_path / "cp"),
                          "--checkpoint-interval", "3600", tls=False)
    try:
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
    finally:
        assert stop_server(served) == 0
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    # The start checkpoint was signed before the server took requests: far younger than an interval.
    assert 0 <= samples["gpu_gateway_audit_checkpoint_age_seconds"] < 3600
    assert samples["gpu_gateway_audit_checkpoint_failures_total"] == 0
    assert samples["gpu_gateway_queue_oldest_age_seconds"] == 0.0
