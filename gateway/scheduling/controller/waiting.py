"""The waiting workloads' report: each one's pods carry `gpu-gateway.io/queue: position N:
reason`, and a `GpuQueueWaiting` Event on its first pod says so whenever either changes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.admission.scheduling_settings import QUEUE_ANNOTATION
from gateway.kube import Cluster, ClusterError
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.controller.events import kube_event
from gateway.scheduling.ports import PassResult, split_key
from gateway.scheduling.reconcile import PodView

log = logging.getLogger("gateway.controller")


class WaitingReport:
    def __init__(self, cluster: Cluster, clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.clock = clock
        self._reported: dict[str, str] = {}
        """Workload key -> the note its pods carry, so an unchanged one is not written again."""

    def reconcile(self, view: ClusterView, result: PassResult) -> None:
        """Report the workloads `result` (the queue pass over `view`) holds back."""
        by_workload: dict[str, list[PodView]] = {}
        for p in view.pods:
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


def _event(pod: PodView, key: str, note: str, now: float) -> dict[str, Any]:
    resource, namespace, name = split_key(key)
    return kube_event(namespace=namespace, generate_name=f"{pod.name}.gpu-queue.",
                      involved={"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name,
                                "uid": pod.uid},
                      reason="GpuQueueWaiting", type_="Normal",
                      message=f"{resource} {namespace}/{name} waits in the GPU queue at {note}", now=now)
