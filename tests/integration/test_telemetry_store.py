"""Telemetry in the real stores (SQLite, PostgreSQL): samples from the scripted device table in
tests/fixtures/agent/llm-node.yaml, run through the agent's sampling and mapping, stored
against the ledger of admitted pods, with their alerts in the audit chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, POLICIES
from postgres_server import pg_url, postgres  # noqa: F401 - fixtures
from telemetry_helpers import llm_admissions

from gateway.admission.ports import Actor
from gateway.audit.ports import AuditQuery
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from gateway.telemetry.agent.agent import Agent
from gateway.telemetry.agent.pods import StaticPods
from gateway.telemetry.agent.simulate import ScriptedSource, load_simulation
from gateway.telemetry.alerts import COLLAPSE, GPU_ERRORS, IDLE, ROGUE
from gateway.telemetry.report import parse_report
from gateway.telemetry.settings import TelemetrySettings

AGENT = Actor("system:serviceaccount:gpu-gateway:gpu-gateway-agent", (), "agent")
SETTINGS = TelemetrySettings(idle_after_s=30)
START = 1_764_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        store: Any = SQLiteStore(tmp_path / "state.db")
    else:
        store = PostgresStore(request.getfixturevalue("postgres").new_database())
    yield store
    store.close()


def reports() -> list[dict[str, Any]]:
    sim = load_simulation(FIXTURES / "agent" / "llm-node.yaml")
    source = ScriptedSource(sim)
    agent = Agent(sim.node, source, source, StaticPods(sim.pods), None, None, interval_s=sim.interval_s,
                  allocations=source.allocations)
    out = [agent.sample(START + 10 * t) for t in range(sim.ticks)]
    return [r for r in out if r is not None]


def ingest(store: Any, report: Any) -> Any:
    return store.ingest_telemetry(parse_report(report), reporter=AGENT, settings=SETTINGS,
                                  exempt_namespaces=frozenset({"kube-system"}), policy_version="test", now=time.time())


def admit(store: Any) -> None:
    service = AdmissionService(PolicyHolder(POLICIES), store, metrics=Metrics())
    for body in llm_admissions():
        assert service.validate(body)["response"]["allowed"]


def test_samples_give_measured_gpu_hours_and_alerts_in_the_audit_chain(any_store: Any) -> None:
    admit(any_store)
    raised = []
    for report in reports():
        raised += [(a.kind, a.pid) for a in ingest(any_store, report).alerts]
    assert len(reports()) == 11  # NVML failed on one tick of twelve
    assert raised == [(ROGUE, 6666), (ROGUE, 7777), (GPU_ERRORS, 0), (COLLAPSE, 0), (GPU_ERRORS, 0),
                      (IDLE, 0), (IDLE, 0), (IDLE, 0), (IDLE, 0), (GPU_ERRORS, 0)]

    usage = any_store.measured_usage(START, START + 1000)
    # 11 ticks x 4 GPUs x 10 s held by bob's four pods (a lost GPU stays allocated to its pod).
    assert usage["users"]["bob"]["gpu_hours"] == pytest.approx(44 * 10 / 3600, abs=1e-5)
    assert usage["teams"]["vision"]["gpu_hours"] == pytest.approx(44 * 10 / 3600, abs=1e-5)
    job = usage["workloads"]["pytorchjobs.kubeflow.org research/llm-70b"]
    assert job["owner"] == "bob" and 40 < job["mean_utilization"] < 60
    assert any_store.measured_usage(START + 1000, START + 2000) == {"users": {}, "teams": {}, "workloads": {}}

    alerts = list(any_store.audit_rows(AuditQuery(action="alert")))
    assert [r["rule"] for r in alerts] == [k for k, _ in raised]
    collapse = next(r for r in alerts if r["rule"] == COLLAPSE)
    assert (collapse["kind"], collapse["namespace"], collapse["name"], collapse["owner"]) == (
        "pytorchjobs.kubeflow.org", "research", "llm-70b", "bob")
    rogue = alerts[0]
    assert (rogue["kind"], rogue["namespace"], rogue["name"], rogue["user"], rogue["decision"]) == (
        "Pod", "research", "miner", AGENT.user, "alert")
    assert any_store.verify().ok


def test_a_resent_report_is_stored_once(any_store: Any) -> None:
    admit(any_store)
    first = reports()[:3]
    for report in first:
        assert ingest(any_store, report).accepted == 4
    again = ingest(any_store, first[-1])
    assert (again.accepted, again.duplicates, again.alerts) == (0, 4, [])
    assert len(any_store.telemetry_samples()) == 12
    held = any_store.measured_usage(START, START + 1000)["users"]["bob"]["gpu_hours"]
    assert held == pytest.approx(12 * 10 / 3600, abs=1e-5)


def test_gpu_time_of_unadmitted_work_is_counted_apart(any_store: Any) -> None:
    # Nothing admitted: every pod is unknown, so the time goes to nobody's account.
    for report in reports()[:2]:
        ingest(any_store, report)
    usage = any_store.measured_usage(START, START + 1000)
    assert usage["users"] == {} and usage["teams"] == {}
    assert usage["workloads"]["(unadmitted)"]["gpu_hours"] == pytest.approx(8 * 10 / 3600, abs=1e-5)
