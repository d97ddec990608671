"""The controller notices when its webhook configurations are edited or deleted (docs/faults.md).

The real controller and kubernetes client against the in-repo API server test double, with a
real SQLite store: the drift raises the metric, an Event and an audit `alert`, a restore
clears it, and a new installation generation records a new baseline without an alarm.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
from k8s_api_double import FakeApiServer
from prometheus_client import CollectorRegistry

from gateway.audit.ports import AuditQuery
from gateway.kube import Cluster, api_client
from gateway.policy_bundle import PolicyHolder, default_policy_dir
from gateway.scheduling.controller.loop import Controller, ControllerSettings
from gateway.scheduling.drift import fingerprint
from gateway.store.sqlite import SQLiteStore

VALIDATING = ("validatingwebhookconfigurations", "gpu-gateway")
CONFIG: dict[str, Any] = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "gpu-gateway"},
    "webhooks": [{
        "name": "gpu.validate.gpu-gateway.io", "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun",
        "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
        "clientConfig": {"service": {"name": "gpu-gateway", "namespace": "gpu-gateway", "path": "/validate"},
                         "caBundle": "Q0EtMQ=="},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["pods"]}],
    }],
}


@pytest.fixture
def world(tmp_path: Path) -> Any:
    double = FakeApiServer()
    url = double.start()
    store = SQLiteStore(tmp_path / "state.db")

    def controller(generation: str = "g1") -> tuple[Controller, CollectorRegistry]:
        registry = CollectorRegistry()
        settings = ControllerSettings(holder="a", webhooks=("validating/gpu-gateway",),
                                      webhook_generation=generation, drift_interval_s=30)
        return Controller(Cluster(api_client(host=url)), store, PolicyHolder(default_policy_dir()), settings,
                          registry=registry), registry

    yield double, store, controller
    double.stop()
    store.close()


def alerts(store: SQLiteStore) -> list[dict[str, Any]]:
    return [r for r in store.audit_rows(AuditQuery(action="alert")) if r["rule"] == "webhook-drift"]


def gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("gpu_gateway_webhook_drift", {"configuration": "validating/gpu-gateway"})


def test_edit_delete_and_restore_of_the_webhook_configuration(world: Any) -> None:
    double, store, controller = world
    double.webhook_configurations[VALIDATING] = copy.deepcopy(CONFIG)
    ctl, registry = controller()
    assert ctl.webhooks.reconcile(force=True) == []  # the first sight records the baseline
    assert gauge(registry) == 0 and not alerts(store)
    # A rotated CA is not drift.
    double.webhook_configurations[VALIDATING]["webhooks"][0]["clientConfig"]["caBundle"] = "Q0EtMg=="
    assert ctl.webhooks.reconcile(force=True) == []
    # Someone narrows what is sent to the gateway.
    double.webhook_configurations[VALIDATING]["webhooks"][0]["failurePolicy"] = "Ignore"
    [drift] = ctl.webhooks.reconcile(force=True)
    assert drift.state == "changed" and gauge(registry) == 1
    [record] = alerts(store)
    assert record["kind"] == "ValidatingWebhookConfiguration" and record["name"] == "gpu-gateway"
    assert "changed outside the installation" in record["reason"]
    event = double.events[-1]
    assert event["reason"] == "WebhookConfigurationDrift" and event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "ValidatingWebhookConfiguration"
    assert ctl.webhooks.reconcile(force=True) == []  # reported once, still alarmed
    assert gauge(registry) == 1
    # Put back as installed: cleared, and said so.
    double.webhook_configurations[VALIDATING] = copy.deepcopy(CONFIG)
    [restored] = ctl.webhooks.reconcile(force=True)
    assert restored.state == "restored" and gauge(registry) == 0
    assert double.events[-1]["reason"] == "WebhookConfigurationRestored"
    # Deleted.
    del double.webhook_configurations[VALIDATING]
    [deleted] = ctl.webhooks.reconcile(force=True)
    assert deleted.state == "deleted" and gauge(registry) == 1
    assert "was deleted" in alerts(store)[-1]["reason"]
    assert store.verify().ok


def test_the_baseline_survives_a_restart_and_a_new_generation_records_a_new_one(world: Any) -> None:
    double, store, controller = world
    double.webhook_configurations[VALIDATING] = copy.deepcopy(CONFIG)
    first, _ = controller("g1")
    first.webhooks.reconcile(force=True)
    double.webhook_configurations[VALIDATING]["webhooks"][0]["timeoutSeconds"] = 30
    # A controller restarted after the edit still compares with the installation's baseline.
    again, registry = controller("g1")
    [drift] = again.webhooks.reconcile(force=True)
    assert drift.state == "changed" and gauge(registry) == 1
    # An upgrade (a new generation) makes what it installed the baseline.
    upgraded, registry = controller("g2")
    assert upgraded.webhooks.reconcile(force=True) == [] and gauge(registry) == 0
    baseline = next(s for s in store.settings() if s.kind == "webhook")
    assert baseline.value == {"fingerprint": fingerprint(double.webhook_configurations[VALIDATING]),
                              "generation": "g2"}


def test_checks_are_spaced_by_the_interval(world: Any) -> None:
    double, _, controller = world
    double.webhook_configurations[VALIDATING] = copy.deepcopy(CONFIG)
    ctl, _ = controller()
    ctl.webhooks.reconcile(force=True)
    double.webhook_configurations[VALIDATING]["webhooks"][0]["failurePolicy"] = "Ignore"
    assert ctl.webhooks.reconcile() == []  # within drift_interval_s of the last check
    ctl.webhooks._checked = time.time() - 31
    assert [d.state for d in ctl.webhooks.reconcile()] == ["changed"]
