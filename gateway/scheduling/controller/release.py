"""Gang release: remove the quota gate from every pod of a workload the ledger holds charged.

Which pods is scheduling/reconcile.py's `gates_to_remove` (released by a queue pass or
admitted at once; only pods in the workload's namespace that belong to its owner); each
PATCH is guarded by a `test` of the gate's name (`gate_removal_patch`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from gateway.kube import Cluster, ClusterError
from gateway.scheduling.controller.cache import ClusterView, PodCache
from gateway.scheduling.ports import QueueStore
from gateway.scheduling.reconcile import PodView, gate_removal_patch, gates_to_remove

#: Gate-removal PATCHes in flight at once.
UNGATE_PARALLELISM = 16


class GangRelease:
    def __init__(self, cluster: Cluster, store: QueueStore, cache: PodCache) -> None:
        self.cluster = cluster
        self.store = store
        self.cache = cache

    def reconcile(self, view: ClusterView) -> None:
        """Remove the gate from the released pods, `UNGATE_PARALLELISM` PATCHes at a time (a
        4,096-pod gang is 4,096 requests); the first unexpected failure is raised after all ran."""
        pods = gates_to_remove(view.pods, self.store.charged_workloads())
        if not pods:
            return

        def ungate(pod: PodView) -> ClusterError | None:
            try:
                self.cluster.patch_pod(pod.namespace, pod.name, gate_removal_patch(pod))
            except ClusterError as exc:
                # Gone or changed meanwhile (404, 409, 422): the next pass sees the pod as it is.
                return exc if exc.status not in (404, 409, 422) else None
            self.cache.ungated(pod)
            return None

        with ThreadPoolExecutor(max_workers=min(UNGATE_PARALLELISM, len(pods))) as pool:
            failures = [f for f in pool.map(ungate, pods) if f is not None]
        if failures:
            raise failures[0]
