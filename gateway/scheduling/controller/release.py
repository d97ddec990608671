"""Gang release: remove the quota gate from every pod of a workload the ledger holds charged.

Which pods is scheduling/reconcile.py's `gates_to_remove` (released by a queue pass or
admitted at once; only pods in the workload's namespace that belong to its owner); each
PATCH is guarded by a `test` of the gate's name (`gate_removal_patch`).
"""

from __future__ import annotations

from gateway.kube import Cluster
from gateway.scheduling.controller.cache import ClusterView, PodCache
from gateway.scheduling.ports import QueueStore
from gateway.scheduling.reconcile import gate_removal_patch, gates_to_remove


class GangRelease:
    def __init__(self, cluster: Cluster, store: QueueStore, cache: PodCache) -> None:
        self.cluster = cluster
        self.store = store
        self.cache = cache

    def reconcile(self, view: ClusterView) -> None:
        """Remove the gate from the released pods, many PATCHes in flight at once
        (`Cluster.patch_pods`: a 4,096-pod gang is 4,096 requests); the first unexpected
        failure is raised after all ran."""
        pods = gates_to_remove(view.pods, self.store.charged_workloads())
        if not pods:
            return
        outcomes = self.cluster.patch_pods([(p.namespace, p.name, gate_removal_patch(p)) for p in pods])
        failures = []
        for pod, failure in zip(pods, outcomes, strict=True):
            if failure is None:
                self.cache.ungated(pod)
            elif failure.status not in (404, 409, 422):
                failures.append(failure)
            # else gone or changed meanwhile (404, 409, 422): the next pass sees the pod as it is.
        if failures:
            raise failures[0]
