"""Root listing: the GPU workloads that predate the gateway, recorded without an owner.

At the controller's first pass, at least every `resync_s` after, and as soon as the policy
registers another kind, every workload kind the
gateway decides (scheduling/roots.py `root_kinds`) is listed from the API server, page by page;
each object is read with the admission's own code (`read_root`), and the roots the ledger does
not hold are recorded in one store transaction (`record_roots`), each audited with action
`reconcile` (rule `reconcile-root`) and counted in `gpu_gateway_ledger_repairs_total{kind="root"}`.
The same transaction adds the kinds listed completely to the store's `roots/listed` setting: a
gateway started with `--await-workload-listing` refuses a `/scale` of a workload it does not
know until its kind is there. A kind whose CRD is not installed (404) has no objects: it counts
as listed, logged once. A kind that cannot be listed (another error) is tried again after
`retry_s`, and stays out of the setting until it is listed.
"""

from __future__ import annotations

import logging

from gateway.admission.ports import Actor
from gateway.kube import Cluster, ClusterError
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.controller.ledger import LedgerMetrics
from gateway.scheduling.ports import ControllerStore
from gateway.scheduling.reconcile import Repair
from gateway.scheduling.roots import RootKind, read_root, root_kinds

log = logging.getLogger("gateway.controller")

#: How soon a listing that could not list every kind is tried again.
RETRY_S = 30.0


class RootListing:
    def __init__(self, cluster: Cluster, store: ControllerStore, actor: Actor, metrics: LedgerMetrics, *,
                 resync_s: float, retry_s: float = RETRY_S, page_size: int = 500) -> None:
        self.cluster = cluster
        self.store = store
        self.actor = actor
        self.metrics = metrics
        self.resync_s = resync_s
        self.retry_s = retry_s
        self.page_size = page_size
        self._due = float("-inf")
        self._not_served: set[str] = set()
        self._kinds: tuple[RootKind, ...] = ()
        """The kinds of the last listing: a policy that registers another lists again at once."""

    def reconcile(self, view: ClusterView) -> list[Repair]:
        """List every workload kind and record the unknown GPU roots, when a listing is due;
        returns the roots recorded."""
        kinds = root_kinds(view.policy.kinds)
        if view.now < self._due and kinds == self._kinds:
            return []
        roots: list[Repair] = []
        listed: list[str] = []
        for kind in kinds:
            key = kind.resource_key
            try:
                found = [root for page in self.cluster.workload_pages(key, limit=self.page_size)
                         for obj in page
                         if (root := read_root(obj, kind, view.policy)) is not None]
            except ClusterError as exc:
                if exc.status != 404:
                    log.warning("cannot list %s: %s; the workloads of this kind that predate the gateway "
                                "are not recorded yet", key, exc)
                    continue
                if key not in self._not_served:
                    log.info("%s is not served by the API server (no CRD): nothing of it to record", key)
                    self._not_served.add(key)
                found = []
            else:
                self._not_served.discard(key)
            roots.extend(found)
            listed.append(key)
        recorded = self.store.record_roots(roots, listed, now=view.now, actor=self.actor)
        for root in recorded:
            self.metrics.repairs.labels(root.kind).inc()
            log.info("recorded %s without an owner: %s", root.key, root.reason)
        complete = len(listed) == len(kinds)
        self._kinds = kinds
        self._due = view.now + (self.resync_s if complete else min(self.retry_s, self.resync_s))
        return recorded
