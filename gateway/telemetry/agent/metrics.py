"""The agent's /metrics, named as NVIDIA's DCGM exporter names them so existing dashboards work.

| metric | unit | DCGM field |
|---|---|---|
| DCGM_FI_DEV_GPU_UTIL | % | GPU utilisation |
| DCGM_FI_DEV_FB_USED, DCGM_FI_DEV_FB_FREE | MiB | framebuffer memory |
| DCGM_FI_DEV_POWER_USAGE | W | power draw |
| DCGM_FI_DEV_GPU_TEMP | °C | temperature |
| DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, DCGM_FI_DEV_ECC_DBE_VOL_TOTAL | count | volatile corrected / uncorrected ECC |
| DCGM_FI_DEV_XID_ERRORS | XID | the last XID error seen (0: none) |

Labels as the DCGM exporter sets them: `gpu` (index), `UUID`, `modelName`, `Hostname`, and
with Kubernetes mapping `namespace`, `pod`, `container` (the pod the GPU is allocated to,
else the pod of its first process). The agent's own: `gpu_gateway_agent_gpu_process_memory_bytes`
per process, `gpu_gateway_agent_gpu_up` (0 when NVML cannot read the GPU), and counters of
samples, reports, failures, NVML errors, spooled reports and dropped samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LABELS = ["gpu", "UUID", "modelName", "Hostname", "namespace", "pod", "container"]
_MIB = 2**20

_GAUGES = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization", 1.0),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_bytes", 1 / _MIB),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w", 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c", 1.0),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.", "ecc_corrected", 1.0),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", "ecc_uncorrected", 1.0),
)


@dataclass(frozen=True)
class GpuView:
    """One GPU as the last sample saw it, with the pod it maps to."""

    sample: dict[str, Any]
    namespace: str = ""
    pod: str = ""
    container: str = ""


class _Snapshot(Collector):
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.gpus: list[GpuView] = []
        self.last_xid: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        gpus = list(self.gpus)
        for name, doc, key, scale in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=_LABELS)
            for g in gpus:
                value = g.sample.get(key)
                if value is not None:
                    family.add_metric(self._labels(g), float(value) * scale)
            yield family
        free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=_LABELS)
        xid = GaugeMetricFamily("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.",
                                labels=_LABELS)
        up = GaugeMetricFamily("gpu_gateway_agent_gpu_up", "1 when NVML could read the GPU at the last sample",
                               labels=_LABELS)
        procs = GaugeMetricFamily("gpu_gateway_agent_gpu_process_memory_bytes",
                                  "GPU memory of each compute process, with the pod it belongs to",
                                  labels=["gpu", "UUID", "Hostname", "pid", "namespace", "pod", "container"])
        for g in gpus:
            s = g.sample
            if s.get("memory_used_bytes") is not None and s.get("memory_total_bytes") is not None:
                free.add_metric(self._labels(g), (s["memory_total_bytes"] - s["memory_used_bytes"]) / _MIB)
            xid.add_metric(self._labels(g), float(self.last_xid.get(s["uuid"], 0)))
            up.add_metric(self._labels(g), 0.0 if s.get("error") else 1.0)
            for p in s.get("processes", []):
                pod = p.get("pod") or {}
                procs.add_metric([str(s.get("index", 0)), s["uuid"], self.hostname, str(p["pid"]),
                                  pod.get("namespace", ""), pod.get("name", ""), p.get("container_id", "")[:12]],
                                 float(p.get("used_memory_bytes", 0)))
        yield from (free, xid, up, procs)

    def _labels(self, g: GpuView) -> list[str]:
        return [str(g.sample.get("index", 0)), g.sample["uuid"], g.sample.get("model", ""), self.hostname,
                g.namespace, g.pod, g.container]


class AgentMetrics:
    def __init__(self, hostname: str) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot(hostname)
        self.registry.register(self._snapshot)
        self.samples = Counter("gpu_gateway_agent_samples", "GPU samples taken", registry=self.registry)
        self.reported_samples = Counter("gpu_gateway_agent_reported_samples",
                                        "GPU samples the gateway acknowledged", registry=self.registry)
        self.report_failures = Counter("gpu_gateway_agent_report_failures",
                                       "Reports the gateway did not take (unreachable, refused)",
                                       registry=self.registry)
        self.nvml_errors = Counter("gpu_gateway_agent_nvml_errors", "Ticks on which NVML could not be used",
                                   registry=self.registry)

    def update(self, gpus: list[GpuView]) -> None:
        for g in gpus:
            for x in g.sample.get("xid_errors", []):
                self._snapshot.last_xid[g.sample["uuid"]] = int(x)
        self._snapshot.gpus = gpus

    def watch_spool(self, stats: Any) -> None:
        """`stats()` → SpoolStats; read at scrape time."""
        registry = self.registry

        class _Spool(Collector):
            def collect(self) -> Iterator[Metric]:
                s = stats()
                yield GaugeMetricFamily("gpu_gateway_agent_spooled_reports",
                                        "Reports waiting on disk for the gateway", value=s.reports)
                yield GaugeMetricFamily("gpu_gateway_agent_spooled_bytes", "Bytes of spooled reports", value=s.bytes)
                yield GaugeMetricFamily("gpu_gateway_agent_dropped_samples",
                                        "Samples dropped because the spool was full", value=s.dropped_samples)

        registry.register(_Spool())
