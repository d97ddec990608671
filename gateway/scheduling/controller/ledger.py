"""Ledger rebuild: make the ledger agree with the cluster's pods, in one store transaction.

The repairs (forget, uncharge, account; and root, by roots.py) are decided by scheduling/reconcile.py
`plan_reconcile` inside the store's transaction (store/queue.py), each one audited with
action `reconcile`; `gpu_gateway_ledger_repairs_total{kind}` counts them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from gateway.admission.ports import Actor
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.ports import QueueStore
from gateway.scheduling.reconcile import Repair


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.repairs = PromCounter("gpu_gateway_ledger_repairs", "Ledger repairs from the cluster's pods",
                                   ["kind"], registry=registry)


class LedgerRebuild:
    def __init__(self, store: QueueStore, actor: Actor, metrics: LedgerMetrics, *, grace_s: float) -> None:
        self.store = store
        self.actor = actor
        self.metrics = metrics
        self.grace_s = grace_s

    def reconcile(self, view: ClusterView, *, absent: frozenset[str] = frozenset()) -> list[Repair]:
        """Repair the ledger from `view`'s pods; `absent`: workload keys the API server answered
        404 for (the orphan lookup), forgotten with the rest. Returns the repairs made."""
        repairs = self.store.reconcile(view.pods, now=view.now, actor=self.actor, absent=absent,
                                       grace_s=self.grace_s)
        for repair in repairs:
            self.metrics.repairs.labels(repair.kind).inc()
        return repairs
