"""Which admitted workload a pod belongs to, from names alone: a workload's pods are named
after it (`llm-70b-worker-3` of `llm-70b`). GPU-hours per workload and the utilisation-collapse
alert group pods by it."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.telemetry.samples import PodRef


def name_prefixes(pod_name: str) -> list[str]:
    """The names a pod's workload may have: every prefix of the pod's name ending before a `-`."""
    parts = pod_name.split("-")
    return ["-".join(parts[:i]) for i in range(1, len(parts))]


def workload_of(pod: PodRef, workloads: Sequence[tuple[str, str, str]]) -> str | None:
    """The admitted workload a pod belongs to: the one in its namespace with the longest name
    that prefixes the pod's (`llm-70b` for `llm-70b-worker-3`, `train` for `train-7d4f9-x2x`).

    `workloads` are (resource, namespace, name) of non-pod ledger records.
    """
    best: tuple[str, str] | None = None
    for resource, namespace, name in workloads:
        if namespace == pod.namespace and pod.name.startswith(name + "-") and (
                best is None or len(name) > len(best[1])):
            best = (resource, name)
    return None if best is None else f"{best[0]} {pod.namespace}/{best[1]}"
