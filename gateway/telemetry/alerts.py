"""The alert decisions: a GPU's state between its samples, and what each sample raises.

Pure: the store passes in what it knows (the previous state of a GPU, who owns a pod) and
writes what these functions return. See docs/agent.md for the alerts and their thresholds.

    sample ──attribute──▶ pods holding the GPU, their owners (from the ledger; attribution.py)
           ──evaluate_gpu──▶ next GpuState + alerts (rogue process, idle, XID/ECC errors, GPU lost)
    pods of a workload ──collapse──▶ utilisation collapse across most of its pods
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.telemetry.attribution import Owner, holders
from gateway.telemetry.samples import GpuSample, PodRef
from gateway.telemetry.settings import TelemetrySettings

#: Alert kinds (the `rule` of their audit records).
ROGUE = "rogue-gpu-process"
IDLE = "idle-gpu"
COLLAPSE = "utilization-collapse"
GPU_ERRORS = "gpu-errors"
ALERT_KINDS = (ROGUE, IDLE, COLLAPSE, GPU_ERRORS)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    node: str
    gpu: str
    reason: str
    ts: float
    pod: PodRef | None = None
    owner: Owner | None = None
    pid: int = 0
    evict: bool = False
    """The settings ask for this pod to be evicted (rogue process in a pod)."""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuState:
    """What the gateway remembers of one GPU between its samples."""

    last_ts: float = 0.0
    idle_since: float | None = None
    idle_alerted: bool = False
    ecc_uncorrected: int = 0
    error: str = ""
    rogue_pids: tuple[int, ...] = ()
    """Rogue processes already alerted on (alert once per process)."""


def evaluate_gpu(prev: GpuState | None, sample: GpuSample, owners: Mapping[PodRef, Owner | None],
                 settings: TelemetrySettings, exempt_namespaces: frozenset[str] = frozenset()
                 ) -> tuple[GpuState, list[Alert]]:
    """The GPU's next state and the alerts this sample raises. A sample older than the state is
    a late duplicate of history: it changes nothing and raises nothing."""
    state = prev or GpuState()
    if prev is not None and sample.ts <= prev.last_ts:
        return prev, []
    alerts: list[Alert] = []
    where = f"GPU {sample.uuid} (index {sample.index}) on node {sample.node}"

    def alert(kind: str, reason: str, **kw: Any) -> None:
        alerts.append(Alert(kind, sample.node, sample.uuid, reason, sample.ts, **kw))

    if sample.error:
        if sample.error != state.error:
            alert(GPU_ERRORS, f"{where}: NVML cannot read it: {sample.error}", details={"error": sample.error})
        return GpuState(sample.ts, None, False, state.ecc_uncorrected, sample.error, state.rogue_pids), alerts

    # Errors: XID events, and uncorrectable ECC errors the counter gained since the last sample.
    ecc = sample.ecc_uncorrected if sample.ecc_uncorrected is not None else state.ecc_uncorrected
    owner_of_gpu = next((owners.get(p) for p in holders(sample) if owners.get(p)), None)
    if sample.xid_errors:
        xids = ", ".join(str(x) for x in sample.xid_errors)
        alert(GPU_ERRORS, f"{where}: XID error(s) {xids}", owner=owner_of_gpu,
              pod=next(iter(holders(sample)), None), details={"xid": list(sample.xid_errors)})
    if prev is not None and ecc > state.ecc_uncorrected:
        alert(GPU_ERRORS, f"{where}: {ecc - state.ecc_uncorrected} new uncorrectable ECC error(s) "
                          f"({ecc} in all)", owner=owner_of_gpu, details={"ecc_uncorrected": ecc})

    # Rogue processes: not in any pod, or in a pod the gateway never admitted.
    rogue: list[int] = []
    for proc in sample.processes:
        pod = proc.pod
        if pod is not None and (pod.namespace in exempt_namespaces or owners.get(pod) is not None):
            continue
        rogue.append(proc.pid)
        if proc.pid in state.rogue_pids:
            continue
        if pod is not None:
            what = f"pod {pod}, which the gateway never admitted"
        elif proc.pod_uid:
            what = f"pod UID {proc.pod_uid}, which the agent could not resolve to a pod the gateway admitted"
        elif proc.container_id:
            what = f"container {proc.container_id[:12]} outside Kubernetes"
        else:
            what = "no container (a host process)"
        alert(ROGUE, f"{where}: process {proc.pid} uses {proc.used_memory_bytes // 2**20} MiB of GPU memory "
                     f"and belongs to {what}", pod=pod, pid=proc.pid,
              evict=settings.evict_rogue_pods and pod is not None,
              details={"pid": proc.pid, "pod_uid": proc.pod_uid, "container_id": proc.container_id})

    # Idle: allocated (or held by an admitted pod) yet at or below the idle threshold.
    held = bool(holders(sample))
    idle = held and sample.utilization is not None and sample.utilization <= settings.idle_utilization_pct
    idle_since = (state.idle_since if state.idle_since is not None else sample.ts) if idle else None
    idle_alerted = state.idle_alerted if idle else False
    if idle and idle_since is not None and not idle_alerted and sample.ts - idle_since >= settings.idle_after_s:
        pod = holders(sample)[0]
        alert(IDLE, f"{where}: allocated to pod {pod} and at most {settings.idle_utilization_pct:g}% busy for "
                    f"{(sample.ts - idle_since) / 60:.0f} min", pod=pod, owner=owners.get(pod),
              details={"idle_since": idle_since})
        idle_alerted = True
    return GpuState(sample.ts, idle_since, idle_alerted, ecc, "", tuple(sorted(rogue))), alerts


@dataclass(frozen=True, slots=True)
class PodUtil:
    """A pod's mean utilisation over its GPUs in its last two samples."""

    pod: PodRef
    previous: float | None
    current: float
    ts: float


def collapse(pods: Sequence[PodUtil], settings: TelemetrySettings, now: float) -> tuple[bool, bool, int, int]:
    """(collapsed, recovered, pods that collapsed, pods counted) for one workload's recent pods.

    Collapsed: at least `collapse_min_pods` pods reported within the window and at least
    `collapse_fraction` of them fell from `collapse_from_pct` or more to `collapse_to_pct` or
    less in their last sample. Recovered: more than half are above `collapse_to_pct` again.
    """
    recent = [p for p in pods if now - p.ts <= settings.collapse_window_s]
    fell = sum(1 for p in recent if p.previous is not None and p.previous >= settings.collapse_from_pct
               and p.current <= settings.collapse_to_pct)
    up = sum(1 for p in recent if p.current > settings.collapse_to_pct)
    enough = len(recent) >= settings.collapse_min_pods
    collapsed = enough and fell >= math.ceil(settings.collapse_fraction * len(recent))
    return collapsed, up * 2 > len(recent), fell, len(recent)
