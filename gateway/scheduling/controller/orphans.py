"""Orphan lookup: workload reservations without pods whose objects the API server does not have.

The candidates come from scheduling/reconcile.py `orphan_candidates`; each is looked up at
most every `recheck_s`, at most `per_pass` a pass. The keys answered 404 go to the ledger
rebuild, which forgets them (rule `reconcile-forget`).
"""

from __future__ import annotations

import logging

from gateway.kube import Cluster, ClusterError
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.ports import ControllerStore, split_key
from gateway.scheduling.reconcile import Held, orphan_candidates

log = logging.getLogger("gateway.controller")


class OrphanLookup:
    def __init__(self, cluster: Cluster, store: ControllerStore, *, grace_s: float, recheck_s: float,
                 per_pass: int) -> None:
        self.cluster = cluster
        self.store = store
        self.grace_s = grace_s
        self.recheck_s = recheck_s
        self.per_pass = per_pass
        self._looked_up: dict[str, float] = {}

    def reconcile(self, view: ClusterView) -> frozenset[str]:
        """The keys of the reservations whose objects do not exist (among those due a lookup)."""
        now = view.now
        held = [Held(f"{r.resource}/{r.namespace}/{r.name}", r.owner, r.team, r.gpus, r.charged, r.created_at)
                for r in self.store.reservations()]
        waiting = frozenset(f"{r['resource']}/{r['namespace']}/{r['name']}" for r in self.store.queue_rows())
        due = [k for k in orphan_candidates(view.pods, held, waiting=waiting, now=now, grace_s=self.grace_s)
               if now - self._looked_up.get(k, float("-inf")) >= self.recheck_s]
        absent = set()
        for key in due[: self.per_pass]:
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
