"""Webhook drift watch: the gateway's webhook configurations compared with the installation's baseline.

At most every `interval_s`, each watched configuration (`validating/NAME`, `mutating/NAME`)
is read and fingerprinted (scheduling/drift.py). The first sight of an installation
generation records the baseline in the store's settings; after that, an edit or a deletion
raises `gpu_gateway_webhook_drift{configuration}`, a Warning Event and an audit `alert`
(rule `webhook-drift`), and a restore clears them, with its own Event and record. The watch
reads the API server itself; it does not use the pod cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from gateway.admission.ports import Actor, SettingChange
from gateway.kube import Cluster, ClusterError
from gateway.scheduling.controller.events import kube_event
from gateway.scheduling.drift import KINDS, Drift, compare, fingerprint, split_target
from gateway.scheduling.ports import ControllerStore

log = logging.getLogger("gateway.controller")


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.drift = Gauge("gpu_gateway_webhook_drift", "1 while a webhook configuration differs from "
                           "the installation's (edited or deleted)", ["configuration"], registry=registry)


class WebhookDriftWatch:
    def __init__(self, cluster: Cluster, store: ControllerStore, actor: Actor, metrics: DriftMetrics, *,
                 targets: tuple[str, ...], generation: str, interval_s: float, event_namespace: str,
                 clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.store = store
        self.actor = actor
        self.metrics = metrics
        self.targets = targets
        self.generation = generation
        self.interval_s = interval_s
        self.event_namespace = event_namespace
        """Where the drift Events go (the controller's own namespace)."""
        self.clock = clock
        self._drifted: set[str] = set()
        self._checked = float("-inf")

    def reconcile(self, *, force: bool = False) -> list[Drift]:
        """Compare the watched configurations with their baselines (at most every `interval_s`
        unless `force`); report each transition. Returns the transitions found."""
        now = self.clock()
        if not self.targets or (not force and now - self._checked < self.interval_s):
            return []
        self._checked = now
        baselines = {s.name: s.value for s in self.store.settings() if s.kind == "webhook"}
        found = []
        for target in self.targets:
            kind, name = split_target(target)
            seen = fingerprint(self.cluster.read_webhook_configuration(kind, name))
            baseline = baselines.get(target)
            if baseline is None or baseline.get("generation") != self.generation:
                if seen is not None:
                    self._record_baseline(target, seen)
                    self._drifted.discard(target)
                    self.metrics.drift.labels(target).set(0)
                    continue
                baseline = {"fingerprint": "(never seen)"}
            drift = compare(target, baseline.get("fingerprint"), seen, alarmed=target in self._drifted)
            if drift is None:
                continue
            found.append(drift)
            self._report(drift, kind, name, now)
        return found

    def _record_baseline(self, target: str, seen: str) -> None:
        value = {"fingerprint": seen, "generation": self.generation}
        self.store.put_setting(SettingChange("webhook", target, value, "baseline of this installation"),
                               self.actor, now=self.clock())
        log.info("recorded the baseline of webhook configuration %s (%s)", target, seen)

    def _report(self, drift: Drift, kind: str, name: str, now: float) -> None:
        if drift.alarm:
            self._drifted.add(drift.target)
            log.error("webhook configuration drift: %s", drift.describe())
        else:
            self._drifted.discard(drift.target)
            log.warning("webhook configuration restored: %s", drift.describe())
        self.metrics.drift.labels(drift.target).set(1 if drift.alarm else 0)
        self.store.record_event(_drift_record(drift, kind, name, self.actor), now=now)
        try:
            self.cluster.create_event(self.event_namespace, _drift_event(drift, kind, name, self.event_namespace, now))
        except ClusterError as exc:
            log.info("cannot create the drift Event: %s", exc)


def _drift_record(drift: Drift, kind: str, name: str, actor: Actor) -> dict[str, Any]:
    """The audit fields of a drift transition: an `alert` (gpuctl audit list --alerts)."""
    return {
        "request_uid": f"drift-{time.time_ns()}", "user": actor.user, "groups": "[]", "role": actor.role,
        "action": "alert", "kind": KINDS[kind], "namespace": "", "name": name, "object_uid": "",
        "gpus": 0, "decision": "alert", "mode": "enforce", "rule": "webhook-drift", "reason": drift.describe(),
        "policy_version": "", "owner": "", "team": "",
        "changes": json.dumps([{"field": "fingerprint", "change": drift.state, "old": drift.expected,
                                "new": drift.seen}], sort_keys=True),
    }


def _drift_event(drift: Drift, kind: str, name: str, namespace: str, now: float) -> dict[str, Any]:
    return kube_event(namespace=namespace, generate_name=f"{name}.webhook-drift.",
                      involved={"apiVersion": "admissionregistration.k8s.io/v1", "kind": KINDS[kind], "name": name},
                      reason="WebhookConfigurationDrift" if drift.alarm else "WebhookConfigurationRestored",
                      type_="Warning" if drift.alarm else "Normal", message=drift.describe(), now=now)
