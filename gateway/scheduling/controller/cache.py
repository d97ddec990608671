"""The pod cache every reconciler reads, and the view of the cluster one pass shares.

`PodCache` holds a `PodView` per pod (scheduling/reconcile.py `read_pod`), never the raw
objects: a full paged list at start, every `resync_s` and after a watch failure (an expired
resourceVersion among them), else the watch events since the last resourceVersion.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.admission.policy import Policy
from gateway.kube import Cluster, ClusterError
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.reconcile import PodView, read_pod

log = logging.getLogger("gateway.controller")


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What one pass observed, shared by its reconcilers: the cached pods, the cluster's GPU
    capacity (schedulable nodes' allocatable GPUs), the policy in force and the pass's time."""

    pods: tuple[PodView, ...]
    capacity: int
    policy: Policy
    now: float


class PodCache:
    def __init__(self, cluster: Cluster, policies: PolicyHolder, *, resync_s: float, clock: Callable[[], float],
                 stop: threading.Event) -> None:
        self.cluster = cluster
        self.policies = policies
        self.resync_s = resync_s
        self.clock = clock
        self._stop = stop
        self._pods: dict[tuple[str, str], PodView] = {}
        self._rv = ""
        self._listed_at = -1.0

    def views(self) -> tuple[PodView, ...]:
        return tuple(self._pods.values())

    def ungated(self, pod: PodView) -> None:
        """Record that the quota gate was removed from `pod` (before the watch says so)."""
        self._pods[(pod.namespace, pod.name)] = replace(pod, gate_index=None)

    def invalidate(self) -> None:
        """List again on the next refresh (after a failed pass)."""
        self._rv = ""

    def refresh(self, wait_s: float = 0.0) -> None:
        """Bring the cache up to date: relist when due or after a watch failure, else wait up
        to `wait_s` for watch events."""
        now = self.clock()
        if not self._rv or now - self._listed_at >= self.resync_s:
            self.relist()
            return
        try:
            self._catch_up(wait_s)
        except ClusterError as exc:
            log.info("pod watch ended (%s); listing again", exc)
            self.relist()

    def relist(self) -> None:
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
