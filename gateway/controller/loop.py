"""The controller's passes: a thin shell around the pure core and the store.

One pass (`Controller.sync`), run only while this replica holds the Lease:

1. bring the pod cache up to date: a full list at start, every `resync_s` and after a
   watch error (an expired resourceVersion among them), else the watch events since the
   last resourceVersion;
2. read the cluster's GPU capacity from the nodes' allocatable GPUs;
3. rebuild the ledger from the pods (scheduling/reconcile.py), in one store transaction;
4. run the queue (scheduling/queue.py through store/queue.py), in one store transaction;
5. remove the gate from every pod of a workload the ledger now holds charged;
6. annotate the waiting workloads' pods with their position and reason, and emit an Event
   when either changes;
7. at most every `drift_interval_s`, compare the gateway's webhook configurations with the
   installation's baseline (scheduling/drift.py): an edit or a deletion raises a metric, an Event
   and an audit record.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from gateway.admission.scheduling_settings import GATEWAY_SERVICE_ACCOUNT, QUEUE_ANNOTATION
from gateway.controller.kube import Cluster, ClusterError
from gateway.controller.lease import LeaderLease, micro_time
from gateway.errors import GatewayError
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.drift import KINDS, Drift, compare, fingerprint, split_target
from gateway.scheduling.reconcile import (
    FORGET_GRACE_S,
    Held,
    PodView,
    gate_removal_patch,
    gates_to_remove,
    gpu_capacity,
    orphan_candidates,
    read_pod,
)
from gateway.store.base import Store
from gateway.store.queue import limits_from, split_key
from gateway.store.types import Actor, PassResult, SettingChange

log = logging.getLogger("gateway.controller")

#: Gate-removal PATCHes in flight at once.
UNGATE_PARALLELISM = 16


@dataclass(frozen=True)
class ControllerSettings:
    identity: str = GATEWAY_SERVICE_ACCOUNT
    """Who the controller acts as in the audit log (and its Lease holder identity, with the host)."""
    lease_namespace: str = "gpu-gateway"
    lease_name: str = "gpu-gateway-controller"
    lease_duration_s: int = 15
    interval_s: float = 2.0
    """Time between passes (a pass also waits up to this long for watch events)."""
    resync_s: float = 300.0
    """Full relist of the pods (and so a full ledger rebuild against a fresh list) at least this often."""
    holder: str = ""
    """This replica's Lease holder identity (default: identity@hostname-pid)."""
    webhooks: tuple[str, ...] = ()
    """Webhook configurations to watch for drift, `validating/NAME` or `mutating/NAME`."""
    webhook_generation: str = ""
    """The installation's generation (the chart: a digest of what it renders): a new one
    records a new baseline instead of raising an alarm."""
    drift_interval_s: float = 30.0
    forget_grace_s: float = FORGET_GRACE_S
    """How old a reservation must be before a missing object frees it."""
    orphan_recheck_s: float = 300.0
    """How often one workload reservation without pods is looked up in the API server."""
    orphan_lookups_per_pass: int = 100


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.wait = Histogram("gpu_gateway_queue_wait_seconds", "Time from queueing to release",
                              registry=registry, buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
        self.released = PromCounter("gpu_gateway_queue_released", "Workloads released from the queue",
                                    registry=registry)
        self.dropped = PromCounter("gpu_gateway_queue_dropped", "Queued gangs dropped (pods did not appear)",
                                   registry=registry)
        self.repairs = PromCounter("gpu_gateway_ledger_repairs", "Ledger repairs from the cluster's pods",
                                   ["kind"], registry=registry)
        self.leader = Gauge("gpu_gateway_controller_leader", "1 while this replica holds the Lease",
                            registry=registry)
        self.drift = Gauge("gpu_gateway_webhook_drift", "1 while a webhook configuration differs from "
                           "the installation's (edited or deleted)", ["configuration"], registry=registry)


class Controller:
    def __init__(self, cluster: Cluster, store: Store, policies: PolicyHolder, settings: ControllerSettings, *,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        import os
        import socket

        self.cluster = cluster
        self.store = store
        self.policies = policies
        self.settings = settings
        self.clock = clock
        self.actor = Actor(settings.identity, (), "controller")
        holder = settings.holder or f"{settings.identity}@{socket.gethostname()}-{os.getpid()}"
        self.lease = LeaderLease(cluster, namespace=settings.lease_namespace, name=settings.lease_name,
                                 identity=holder, duration_s=settings.lease_duration_s)
        self.registry = registry or CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry)
        self._pods: dict[tuple[str, str], PodView] = {}
        self._rv = ""
        self._listed_at = -1.0
        self._reported: dict[str, str] = {}
        self._drifted: set[str] = set()
        self._looked_up: dict[str, float] = {}
        self._drift_checked = float("-inf")
        self._stop = threading.Event()

    # ---------------------------------------------------------------- the pod cache

    def _relist(self) -> None:
        """A full list, read page by page into PodViews (the raw pods are dropped as it goes).

        The collector is paused meanwhile: parsing a page allocates millions of objects that
        live on, and generational collections over a growing heap would dominate the time.
        """
        gpu = self.policies.policy.gpu
        pods = {}
        rv = ""
        gc.disable()
        try:
            for items, page_rv in self.cluster.pod_pages():
                rv = page_rv
                for item in items:
                    view = read_pod(item, gpu)
                    if view is not None:
                        pods[(view.namespace, view.name)] = view
        finally:
            gc.enable()
        self._pods, self._rv = pods, rv
        self._listed_at = self.clock()

    def _catch_up(self, wait_s: float) -> None:
        gpu = self.policies.policy.gpu
        for event in self.cluster.watch_pods(self._rv, timeout_s=max(int(wait_s), 1)):
            obj = event.get("object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if event.get("type") == "BOOKMARK":
                self._rv = str(rv or self._rv)
                continue
            view = read_pod(obj, gpu)
            if view is None:
                continue
            if event.get("type") == "DELETED":
                self._pods.pop((view.namespace, view.name), None)
            else:
                self._pods[(view.namespace, view.name)] = view
            self._rv = str(rv or self._rv)
            if self._stop.is_set():
                return

    def refresh(self, wait_s: float = 0.0) -> None:
        """Bring the pod cache up to date: relist when due or after a watch failure."""
        now = self.clock()
        if not self._rv or now - self._listed_at >= self.settings.resync_s:
            self._relist()
            return
        try:
            self._catch_up(wait_s)
        except ClusterError as exc:
            log.info("pod watch ended (%s); listing again", exc)
            self._relist()

    # ---------------------------------------------------------------- one pass

    def sync(self, *, wait_s: float = 0.0) -> PassResult:
        """One pass (module docstring). The caller holds the Lease."""
        self.refresh(wait_s)
        policy = self.policies.policy
        now = self.clock()
        capacity = gpu_capacity(self.cluster.list_nodes(), policy.gpu)
        views = list(self._pods.values())
        absent = self._absent_workloads(views, now)
        repairs = self.store.reconcile(views, now=now, actor=self.actor, absent=absent,
                                       grace_s=self.settings.forget_grace_s)
        for repair in repairs:
            self.metrics.repairs.labels(repair.kind).inc()
        pods_seen = Counter(p.workload for p in views if p.workload and not p.finished and not p.deleting)
        result: PassResult = self.store.run_queue(limits_from(policy, capacity), now=now, actor=self.actor,
                                                  pods_seen=pods_seen)
        for w in result.plan.released:
            self.metrics.released.inc()
            self.metrics.wait.observe(max(now - w.arrival, 0.0))
            log.info("released %s (%d GPUs, %d pods)", w.key, w.gpus, w.pods)
        for key, reason in result.dropped:
            self.metrics.dropped.inc()
            log.warning("dropped %s: %s", key, reason)
        self._ungate(views)
        self._report(views, result)
        self.check_webhooks()
        return result

    def _absent_workloads(self, views: list[PodView], now: float) -> frozenset[str]:
        """Workload reservations without pods whose objects the API server does not have (each
        looked up at most every `orphan_recheck_s`, at most `orphan_lookups_per_pass` a pass)."""
        held = [Held(f"{r.resource}/{r.namespace}/{r.name}", r.owner, r.team, r.gpus, r.charged, r.created_at)
                for r in self.store.reservations()]
        waiting = frozenset(f"{r['resource']}/{r['namespace']}/{r['name']}" for r in self.store.queue_rows())
        due = [k for k in orphan_candidates(views, held, waiting=waiting, now=now,
                                            grace_s=self.settings.forget_grace_s)
               if now - self._looked_up.get(k, float("-inf")) >= self.settings.orphan_recheck_s]
        absent = set()
        for key in due[: self.settings.orphan_lookups_per_pass]:
            self._looked_up[key] = now
            resource, namespace, name = split_key(key)
            try:
                if not self.cluster.object_exists(resource, namespace, name):
                    absent.add(key)
            except ClusterError as exc:
                log.info("cannot look up %s: %s", key, exc)
        live = {h.key for h in held}
        self._looked_up = {k: t for k, t in self._looked_up.items() if k in live}
        return frozenset(absent)

    # ---------------------------------------------------------------- webhook drift

    def check_webhooks(self, *, force: bool = False) -> list[Drift]:
        """Compare the watched webhook configurations with their baselines (at most every
        `drift_interval_s`); report each transition. Returns the transitions found."""
        now = self.clock()
        if not self.settings.webhooks or (not force and now - self._drift_checked < self.settings.drift_interval_s):
            return []
        self._drift_checked = now
        baselines = {s.name: s.value for s in self.store.settings() if s.kind == "webhook"}
        found = []
        for target in self.settings.webhooks:
            kind, name = split_target(target)
            seen = fingerprint(self.cluster.read_webhook_configuration(kind, name))
            baseline = baselines.get(target)
            if baseline is None or baseline.get("generation") != self.settings.webhook_generation:
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
            self._report_drift(drift, kind, name, now)
        return found

    def _record_baseline(self, target: str, seen: str) -> None:
        value = {"fingerprint": seen, "generation": self.settings.webhook_generation}
        self.store.put_setting(SettingChange("webhook", target, value, "baseline of this installation"),
                               self.actor, now=self.clock())
        log.info("recorded the baseline of webhook configuration %s (%s)", target, seen)

    def _report_drift(self, drift: Drift, kind: str, name: str, now: float) -> None:
        if drift.alarm:
            self._drifted.add(drift.target)
            log.error("webhook configuration drift: %s", drift.describe())
        else:
            self._drifted.discard(drift.target)
            log.warning("webhook configuration restored: %s", drift.describe())
        self.metrics.drift.labels(drift.target).set(1 if drift.alarm else 0)
        self.store.record_event(_drift_record(drift, kind, name, self.actor), now=now)
        try:
            self.cluster.create_event(self.settings.lease_namespace,
                                      _drift_event(drift, kind, name, self.settings.lease_namespace, now))
        except ClusterError as exc:
            log.info("cannot create the drift Event: %s", exc)

    def _ungate(self, views: list[PodView]) -> None:
        """Remove the gate from the released pods, `UNGATE_PARALLELISM` PATCHes at a time (a
        4,096-pod gang is 4,096 requests); the first unexpected failure is raised after all ran."""
        pods = gates_to_remove(views, self.store.charged_workloads())
        if not pods:
            return

        def ungate(pod: PodView) -> ClusterError | None:
            try:
                self.cluster.patch_pod(pod.namespace, pod.name, gate_removal_patch(pod))
            except ClusterError as exc:
                # Gone or changed meanwhile (404, 409, 422): the next pass sees the pod as it is.
                return exc if exc.status not in (404, 409, 422) else None
            self._pods[(pod.namespace, pod.name)] = _without_gate(pod)
            return None

        with ThreadPoolExecutor(max_workers=min(UNGATE_PARALLELISM, len(pods))) as pool:
            failures = [f for f in pool.map(ungate, pods) if f is not None]
        if failures:
            raise failures[0]

    def _report(self, views: list[PodView], result: PassResult) -> None:
        by_workload: dict[str, list[PodView]] = {}
        for p in views:
            if p.workload and p.gated:
                by_workload.setdefault(p.workload, []).append(p)
        waiting = set()
        for held in result.plan.held:
            waiting.add(held.key)
            note = f"position {held.position}: {held.reason}"
            if self._reported.get(held.key) == note:
                continue
            pods = sorted(by_workload.get(held.key, []), key=lambda p: p.name)
            try:
                for pod in pods:
                    patch = {"metadata": {"annotations": {QUEUE_ANNOTATION: note}}}
                    self.cluster.patch_pod(pod.namespace, pod.name, patch)
                if pods:
                    self.cluster.create_event(pods[0].namespace, _event(pods[0], held.key, note, self.clock()))
            except ClusterError as exc:
                log.info("cannot report the queue position of %s: %s", held.key, exc)
                continue
            self._reported[held.key] = note
        for key in set(self._reported) - waiting:
            del self._reported[key]

    # ---------------------------------------------------------------- the loop

    def run_once(self) -> PassResult | None:
        """Renew (or take) the Lease and, while held, run one pass; None when another replica leads."""
        leader = self.lease.acquire(self.clock())
        self.metrics.leader.set(1 if leader else 0)
        if not leader:
            return None
        return self.sync(wait_s=self.settings.interval_s)

    def run(self) -> None:
        """Pass after pass until `stop()`. A failing pass is logged and retried on the next."""
        while not self._stop.is_set():
            started = self.clock()
            try:
                if self.run_once() is None:
                    self._stop.wait(self.settings.interval_s)
            except GatewayError as exc:
                log.error("controller pass failed: %s", exc)
                self._rv = ""  # list again next time
                self._stop.wait(self.settings.interval_s)
            elapsed = self.clock() - started
            if elapsed < 0.05:
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()


def _without_gate(pod: PodView) -> PodView:
    from dataclasses import replace

    return replace(pod, gate_index=None)


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
    stamp = micro_time(now)[:19] + "Z"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{name}.webhook-drift.", "namespace": namespace},
        "involvedObject": {"apiVersion": "admissionregistration.k8s.io/v1", "kind": KINDS[kind], "name": name},
        "reason": "WebhookConfigurationDrift" if drift.alarm else "WebhookConfigurationRestored",
        "type": "Warning" if drift.alarm else "Normal", "message": drift.describe(),
        "source": {"component": "gpu-gateway-controller"}, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "reportingComponent": "gpu-gateway-controller", "reportingInstance": "gpu-gateway",
    }


def _event(pod: PodView, key: str, note: str, now: float) -> dict[str, Any]:
    resource, namespace, name = split_key(key)
    stamp = micro_time(now)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{pod.name}.gpu-queue.", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name,
                           "uid": pod.uid},
        "reason": "GpuQueueWaiting", "type": "Normal",
        "message": f"{resource} {namespace}/{name} waits in the GPU queue at {note}",
        "source": {"component": "gpu-gateway-controller"},
        "firstTimestamp": stamp[:19] + "Z", "lastTimestamp": stamp[:19] + "Z", "count": 1,
        "reportingComponent": "gpu-gateway-controller", "reportingInstance": "gpu-gateway",
    }
