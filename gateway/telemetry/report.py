"""Reading an agent's report (`POST /api/v1/telemetry`, docs/agent.md) into samples: every
field checked for type and range, so a report cannot cost the gateway unbounded work."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gateway.telemetry.samples import GpuProcess, GpuSample, PodRef

#: Upper bounds that keep one report from costing the gateway unbounded work.
MAX_SAMPLES_PER_REPORT = 20_000
MAX_PROCESSES_PER_GPU = 256
MAX_INTERVAL_S = 300.0


class TelemetryError(ValueError):
    """A report that cannot be read: the message names the field."""


def _num(value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TelemetryError(f"{where} must be a number, not {value!r}")
    if not lo <= value <= hi:
        raise TelemetryError(f"{where} must be between {lo:g} and {hi:g}, not {value!r}")
    if integer:
        if int(value) != value:
            raise TelemetryError(f"{where} must be a whole number, not {value!r}")
        return int(value)
    return float(value)


def _str(value: Any, where: str, *, required: bool = False, limit: int = 253) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise TelemetryError(f"{where} must be a{' non-empty' if required else ''} string of at most "
                             f"{limit} characters")
    return value


def _pod(value: Any, where: str) -> PodRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TelemetryError(f"{where} must be an object with namespace and name")
    return PodRef(_str(value.get("namespace"), f"{where}.namespace", required=True),
                  _str(value.get("name"), f"{where}.name", required=True))


def _process(raw: Any, where: str) -> GpuProcess:
    if not isinstance(raw, Mapping):
        raise TelemetryError(f"{where} must be an object")
    return GpuProcess(
        pid=_num(raw.get("pid"), f"{where}.pid", lo=0, hi=2**32, integer=True) or 0,
        used_memory_bytes=_num(raw.get("used_memory_bytes", 0), f"{where}.used_memory_bytes", hi=2**64,
                               integer=True) or 0,
        pod_uid=_str(raw.get("pod_uid"), f"{where}.pod_uid", limit=64),
        container_id=_str(raw.get("container_id"), f"{where}.container_id", limit=128),
        pod=_pod(raw.get("pod"), f"{where}.pod"),
    )


def parse_sample(raw: Any, node: str, where: str) -> GpuSample:
    if not isinstance(raw, Mapping):
        raise TelemetryError(f"{where} must be an object")
    procs = raw.get("processes") or []
    if not isinstance(procs, list) or len(procs) > MAX_PROCESSES_PER_GPU:
        raise TelemetryError(f"{where}.processes must be a list of at most {MAX_PROCESSES_PER_GPU}")
    xids = raw.get("xid_errors") or []
    if not isinstance(xids, list) or len(xids) > 1000:
        raise TelemetryError(f"{where}.xid_errors must be a list of XID numbers")
    return GpuSample(
        node=node,
        uuid=_str(raw.get("uuid"), f"{where}.uuid", required=True, limit=96),
        ts=_num(raw.get("ts"), f"{where}.ts", lo=0, hi=1e11),
        interval_s=_num(raw.get("interval_s"), f"{where}.interval_s", lo=0, hi=MAX_INTERVAL_S) or 0.0,
        index=_num(raw.get("index", 0), f"{where}.index", hi=4096, integer=True),
        model=_str(raw.get("model"), f"{where}.model", limit=128),
        utilization=_num(raw.get("utilization"), f"{where}.utilization", hi=100),
        memory_used_bytes=_num(raw.get("memory_used_bytes"), f"{where}.memory_used_bytes", hi=2**64, integer=True),
        memory_total_bytes=_num(raw.get("memory_total_bytes"), f"{where}.memory_total_bytes", hi=2**64,
                                integer=True),
        power_w=_num(raw.get("power_w"), f"{where}.power_w", hi=1e5),
        temperature_c=_num(raw.get("temperature_c"), f"{where}.temperature_c", lo=-100, hi=1000),
        ecc_corrected=_num(raw.get("ecc_corrected"), f"{where}.ecc_corrected", hi=2**64, integer=True),
        ecc_uncorrected=_num(raw.get("ecc_uncorrected"), f"{where}.ecc_uncorrected", hi=2**64, integer=True),
        xid_errors=tuple(_num(x, f"{where}.xid_errors[]", hi=2**32, integer=True) for x in xids),
        processes=tuple(_process(p, f"{where}.processes[{i}]") for i, p in enumerate(procs)),
        allocated=_pod(raw.get("allocated"), f"{where}.allocated"),
        error=_str(raw.get("error"), f"{where}.error", limit=512),
    )


def parse_report(body: Any) -> list[GpuSample]:
    """The samples of a report `{"node": N, "samples": [...]}` (or a list of such reports)."""
    reports = body if isinstance(body, list) else [body]
    out: list[GpuSample] = []
    for r, report in enumerate(reports):
        where = f"reports[{r}]" if isinstance(body, list) else "report"
        if not isinstance(report, Mapping):
            raise TelemetryError(f"{where} must be an object with node and samples")
        node = _str(report.get("node"), f"{where}.node", required=True)
        samples = report.get("samples")
        if not isinstance(samples, list):
            raise TelemetryError(f"{where}.samples must be a list")
        if len(out) + len(samples) > MAX_SAMPLES_PER_REPORT:
            raise TelemetryError(f"a report may hold at most {MAX_SAMPLES_PER_REPORT} samples")
        out += [parse_sample(s, node, f"{where}.samples[{i}]") for i, s in enumerate(samples)]
    return out
