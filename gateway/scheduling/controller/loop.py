"""The controller's loop: it holds the Lease, keeps the shared pod cache and schedules the reconcilers.

One pass (`Controller.sync`), run only while this replica holds the Lease:

1. bring the pod cache up to date (cache.py) and read the cluster's GPU capacity from the
   nodes' allocatable GPUs: the pass's `ClusterView`, which every reconciler below reads;
2. roots.py: at the first pass, every `resync_s` and when the policy registers another kind,
   list the objects of every workload kind the gateway decides and record the GPU workloads
   the ledger does not hold (created before the gateway, or while its webhook was
   unreachable) without an owner (scheduling/roots.py), in one store transaction that also
   marks those kinds listed;
3. orphans.py: look up the workload reservations without pods in the API server;
4. ledger.py: rebuild the ledger from the pods (scheduling/reconcile.py), in one store
   transaction, forgetting the orphans the lookup found absent;
5. queue_pass.py: run the queue (scheduling/queue.py through store/queue.py), in one store
   transaction;
6. release.py: remove the gate from every pod of a workload the ledger now holds charged;
7. waiting.py: annotate the waiting workloads' pods with their position and reason, and emit
   an Event when either changes;
8. webhook_drift.py: at most every `drift_interval_s`, compare the gateway's webhook
   configurations with the installation's baseline (scheduling/drift.py): an edit or a
   deletion raises a metric, an Event and an audit record.

Each reconciler owns its metrics and the state it keeps between passes; the pure decisions
are gateway.scheduling's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from gateway.admission.ports import Actor
from gateway.admission.scheduling_settings import GATEWAY_SERVICE_ACCOUNT
from gateway.errors import GatewayError
from gateway.kube import Cluster
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.controller.cache import ClusterView, PodCache
from gateway.scheduling.controller.lease import LeaderLease
from gateway.scheduling.controller.ledger import LedgerMetrics, LedgerRebuild
from gateway.scheduling.controller.orphans import OrphanLookup
from gateway.scheduling.controller.queue_pass import QueueMetrics, QueuePass
from gateway.scheduling.controller.release import GangRelease
from gateway.scheduling.controller.roots import RootListing
from gateway.scheduling.controller.waiting import WaitingReport
from gateway.scheduling.controller.webhook_drift import DriftMetrics, WebhookDriftWatch
from gateway.scheduling.ports import ControllerStore, PassResult
from gateway.scheduling.reconcile import FORGET_GRACE_S, gpu_capacity

log = logging.getLogger("gateway.controller")


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
    """Full relist of the pods (and so a full ledger rebuild against a fresh list), and of the
    workloads that predate the gateway, at least this often."""
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
    """Every series the controller exports: each reconciler's, and the Lease's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue = QueueMetrics(registry)
        self.ledger = LedgerMetrics(registry)
        self.leader = Gauge("gpu_gateway_controller_leader", "1 while this replica holds the Lease",
                            registry=registry)
        self.drift = DriftMetrics(registry)


class Controller:
    def __init__(self, cluster: Cluster, store: ControllerStore, policies: PolicyHolder,
                 settings: ControllerSettings, *,
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
        self._stop = threading.Event()
        self.pods = PodCache(cluster, policies, resync_s=settings.resync_s, clock=clock, stop=self._stop)
        self.orphans = OrphanLookup(cluster, store, grace_s=settings.forget_grace_s,
                                    recheck_s=settings.orphan_recheck_s, per_pass=settings.orphan_lookups_per_pass)
        self.roots = RootListing(cluster, store, self.actor, self.metrics.ledger, resync_s=settings.resync_s)
        self.ledger = LedgerRebuild(store, self.actor, self.metrics.ledger, grace_s=settings.forget_grace_s)
        self.queue = QueuePass(store, self.actor, self.metrics.queue)
        self.release = GangRelease(cluster, store, self.pods)
        self.waiting = WaitingReport(cluster, clock)
        self.webhooks = WebhookDriftWatch(cluster, store, self.actor, self.metrics.drift, targets=settings.webhooks,
                                          generation=settings.webhook_generation,
                                          interval_s=settings.drift_interval_s,
                                          event_namespace=settings.lease_namespace, clock=clock)

    # ---------------------------------------------------------------- one pass

    def sync(self, *, wait_s: float = 0.0) -> PassResult:
        """One pass (module docstring). The caller holds the Lease."""
        self.pods.refresh(wait_s)
        view = self.observe()
        self.roots.reconcile(view)
        absent = self.orphans.reconcile(view)
        self.ledger.reconcile(view, absent=absent)
        result = self.queue.reconcile(view)
        self.release.reconcile(view)
        self.waiting.reconcile(view, result)
        self.webhooks.reconcile()
        return result

    def observe(self) -> ClusterView:
        """The pass's view: the cached pods, the nodes' GPU capacity, the policy in force, now."""
        policy = self.policies.policy
        now = self.clock()
        capacity = gpu_capacity(self.cluster.list_nodes(), policy.gpu)
        return ClusterView(self.pods.views(), capacity, policy, now)

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
                self.pods.invalidate()  # list again next time
                self._stop.wait(self.settings.interval_s)
            elapsed = self.clock() - started
            if elapsed < 0.05:
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
