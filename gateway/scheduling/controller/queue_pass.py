"""The queue pass: decide which waiting gangs are released and charge them, in one store transaction.

The decision is scheduling/queue.py's, run by store/queue.py `run_queue` against the caps
of the policy in force and the cluster's GPU capacity; gangs whose pods have not all
appeared within `gang_timeout_s` are dropped there. The gate removal that starts a released
gang is `release.GangRelease`'s, the waiting workloads' report `waiting.WaitingReport`'s.
"""

from __future__ import annotations

import logging
from collections import Counter

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from gateway.admission.ports import Actor
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.ports import PassResult, QueueStore, limits_from

log = logging.getLogger("gateway.controller")


class QueueMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.wait = Histogram("gpu_gateway_queue_wait_seconds", "Time from queueing to release",
                              registry=registry, buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
        self.released = PromCounter("gpu_gateway_queue_released", "Workloads released from the queue",
                                    registry=registry)
        self.dropped = PromCounter("gpu_gateway_queue_dropped", "Queued gangs dropped (pods did not appear)",
                                   registry=registry)


class QueuePass:
    def __init__(self, store: QueueStore, actor: Actor, metrics: QueueMetrics) -> None:
        self.store = store
        self.actor = actor
        self.metrics = metrics

    def reconcile(self, view: ClusterView) -> PassResult:
        """Run the queue once over `view` (its pods tell which gangs have all appeared)."""
        pods_seen = Counter(p.workload for p in view.pods if p.workload and not p.finished and not p.deleting)
        result: PassResult = self.store.run_queue(limits_from(view.policy, view.capacity), now=view.now,
                                                  actor=self.actor, pods_seen=pods_seen)
        for w in result.plan.released:
            self.metrics.released.inc()
            self.metrics.wait.observe(max(view.now - w.arrival, 0.0))
            log.info("released %s (%d GPUs, %d pods)", w.key, w.gpus, w.pods)
        for key, reason in result.dropped:
            self.metrics.dropped.inc()
            log.warning("dropped %s: %s", key, reason)
        return result
