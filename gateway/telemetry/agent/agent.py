"""The node agent's loop: read every GPU, map its processes to pods, spool the report, repeat.

Sampling never waits on the network (the reporter's thread sends) and never dies of a
failing GPU or driver (logged, counted in /metrics, retried at the next tick).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.telemetry.agent.metrics import AgentMetrics, GpuView
from gateway.telemetry.agent.nvml import DeviceSource, NvmlUnavailable
from gateway.telemetry.agent.pods import CgroupReader, PodDirectory, container_of
from gateway.telemetry.agent.reporter import Reporter
from gateway.telemetry.samples import GpuSample, PodRef

log = logging.getLogger("gateway.agent")


def _pod_json(pod: PodRef | None) -> dict[str, str] | None:
    return None if pod is None else {"namespace": pod.namespace, "name": pod.name}


class Agent:
    def __init__(self, node: str, source: DeviceSource, cgroups: CgroupReader, pods: PodDirectory,
                 reporter: Reporter | None, metrics: AgentMetrics | None, *, interval_s: float = 10.0,
                 allocations: Callable[[], dict[str, PodRef]] | None = None) -> None:
        self.node, self.source, self.cgroups, self.pods = node, source, cgroups, pods
        self.reporter, self.metrics = reporter, metrics
        self.interval_s = interval_s
        self.allocations = allocations
        self.ticks = 0

    def sample(self, ts: float) -> dict[str, Any] | None:
        """One report of every GPU at `ts`, or None when NVML cannot be used this tick."""
        try:
            readings = self.source.read()
        except NvmlUnavailable as exc:
            log.error("cannot read the GPUs: %s", exc)
            if self.metrics is not None:
                self.metrics.nvml_errors.inc()
            return None
        allocated = self.allocations() if self.allocations else {}
        samples, views = [], []
        for r in readings:
            sample, view = self._sample(r, ts, allocated.get(r.uuid))
            samples.append(sample)
            views.append(view)
        if self.metrics is not None:
            self.metrics.samples.inc(len(samples))
            self.metrics.update(views)
        return {"node": self.node, "samples": samples}

    def _sample(self, r: GpuSample, ts: float, allocated: PodRef | None) -> tuple[dict[str, Any], GpuView]:
        processes = []
        first: tuple[PodRef, str] | None = None
        for p in r.processes:
            ref = container_of(self.cgroups, p.pid)
            pod = self.pods.pod(ref.pod_uid) if ref is not None and ref.pod_uid else None
            if pod is not None and first is None:
                first = (pod, ref.container_id if ref else "")
            processes.append({"pid": p.pid, "used_memory_bytes": p.used_memory_bytes,
                              "pod_uid": ref.pod_uid if ref else "", "container_id": ref.container_id if ref else "",
                              "pod": _pod_json(pod)})
        sample: dict[str, Any] = {
            "uuid": r.uuid, "index": r.index, "model": r.model, "ts": ts, "interval_s": self.interval_s,
            "utilization": r.utilization, "memory_used_bytes": r.memory_used_bytes,
            "memory_total_bytes": r.memory_total_bytes, "power_w": r.power_w, "temperature_c": r.temperature_c,
            "ecc_corrected": r.ecc_corrected, "ecc_uncorrected": r.ecc_uncorrected,
            "xid_errors": list(r.xid_errors), "processes": processes, "allocated": _pod_json(allocated),
            "error": r.error,
        }
        shown = allocated or (first[0] if first else None)
        view = GpuView(sample, shown.namespace if shown else "", shown.name if shown else "",
                       first[1][:12] if first and first[0] == shown else "")
        return sample, view

    def tick(self, ts: float) -> None:
        report = self.sample(ts)
        self.ticks += 1
        if report is not None and self.reporter is not None:
            self.reporter.submit(report)

    def run(self, stop: threading.Event, *, ticks: int | None = None, tick_s: float | None = None,
            clock: Callable[[int], float] | None = None) -> None:
        """Tick every `tick_s` real seconds (default the interval) until `stop` or `ticks` ticks.

        `clock(n)` gives the time stamped on tick n (default: the wall clock); a simulation
        stamps simulated time so that a script of an hour can run in seconds.
        """
        period = self.interval_s if tick_s is None else tick_s
        started = time.monotonic()
        n = 0
        while not stop.is_set() and (ticks is None or n < ticks):
            try:
                self.tick(clock(n) if clock else time.time())
            except Exception:  # never let one bad tick stop the agent
                log.exception("sampling failed")
            n += 1
            delay = started + n * period - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
