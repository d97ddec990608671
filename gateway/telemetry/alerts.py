"""GPU telemetry from the node agents: the samples, the thresholds, and the alert decisions.

Pure: the store passes in what it knows (the previous state of a GPU, who owns a pod) and
writes what these functions return. See docs/agent.md for the alerts and their thresholds.

    sample ──attribute──▶ pods holding the GPU, their owners (from the ledger)
           ──evaluate_gpu──▶ next GpuState + alerts (rogue process, idle, XID/ECC errors, GPU lost)
    pods of a workload ──collapse──▶ utilisation collapse across most of its pods
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Alert kinds (the `rule` of their audit records).
ROGUE = "rogue-gpu-process"
IDLE = "idle-gpu"
COLLAPSE = "utilization-collapse"
GPU_ERRORS = "gpu-errors"
ALERT_KINDS = (ROGUE, IDLE, COLLAPSE, GPU_ERRORS)

#: Upper bounds that keep one report from costing the gateway unbounded work.
MAX_SAMPLES_PER_REPORT = 20_000
MAX_PROCESSES_PER_GPU = 256
MAX_INTERVAL_S = 300.0


class TelemetryError(ValueError):
    """A report that cannot be read: the message names the field."""


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int
    pod_uid: str = ""
    container_id: str = ""
    pod: PodRef | None = None
    """The pod the process runs in, when the agent could resolve its UID."""


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU: what NVML reads on the node (gateway.agent.nvml), and, stamped with
    the node, the time and the interval it stands for, what a report carries to the gateway."""

    node: str = ""
    """The node it was read on (empty in a reading the agent has not stamped yet)."""
    uuid: str = ""
    ts: float = 0.0
    interval_s: float = 0.0
    """The time this sample stands for (the agent's sampling period): its share of GPU-hours."""
    index: int = 0
    model: str = ""
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    xid_errors: tuple[int, ...] = ()
    """XID events seen since the previous sample."""
    processes: tuple[GpuProcess, ...] = ()
    allocated: PodRef | None = None
    """The pod the kubelet allocated this GPU to, when known (pod-resources API)."""
    error: str = ""
    """Why NVML could not read this GPU (for example `GPU is lost`); the readings are then empty."""


# ------------------------------------------------------------------ reading a report


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


# ------------------------------------------------------------------ thresholds


@dataclass(frozen=True, slots=True)
class TelemetryPolicy:
    """limits.yaml `telemetry`: alert thresholds and the eviction switch (docs/agent.md)."""

    idle_utilization_pct: float = 5.0
    """A GPU at or below this utilisation is idle."""
    idle_after_s: float = 1800.0
    """An allocated GPU idle this long raises `idle-gpu` (once per idle stretch)."""
    collapse_min_pods: int = 4
    """Workloads with fewer reporting pods are never judged for a collapse."""
    collapse_fraction: float = 0.75
    """The share of a workload's pods that must collapse at once."""
    collapse_from_pct: float = 50.0
    """A pod collapses when it drops from at least this utilisation ..."""
    collapse_to_pct: float = 10.0
    """... to at most this, between two samples."""
    collapse_window_s: float = 120.0
    """Pods whose last sample is older than this are not counted."""
    evict_rogue_pods: bool = False
    """Evict the pod of a rogue GPU process (itself an audited privileged action)."""


_POLICY_FIELDS = {
    "idle_utilization_pct": (0.0, 100.0), "idle_after_s": (0.0, 30 * 86400.0),
    "collapse_min_pods": (1, 1_000_000), "collapse_fraction": (0.01, 1.0), "collapse_from_pct": (0.0, 100.0),
    "collapse_to_pct": (0.0, 100.0), "collapse_window_s": (1.0, 86400.0),
}


def telemetry_policy(raw: Any) -> TelemetryPolicy:
    """Read limits.yaml `telemetry` (None: the defaults); ValueError naming the bad setting."""
    if raw is None:
        return TelemetryPolicy()
    if not isinstance(raw, Mapping):
        raise ValueError("limits.yaml: telemetry must be a mapping")
    unknown = sorted(set(raw) - set(_POLICY_FIELDS) - {"evict_rogue_pods"})
    if unknown:
        raise ValueError(f"limits.yaml: telemetry: unknown setting(s) {', '.join(map(str, unknown))}")
    values: dict[str, Any] = {}
    for name, (lo, hi) in _POLICY_FIELDS.items():
        if name in raw:
            value = raw[name]
            ok = not isinstance(value, bool) and isinstance(value, int | float) and lo <= value <= hi
            if ok and isinstance(lo, int) and not isinstance(value, int):
                ok = False
            if not ok:
                raise ValueError(f"limits.yaml: telemetry.{name} must be a number from {lo} to {hi}, not {value!r}")
            values[name] = value
    if "evict_rogue_pods" in raw:
        if not isinstance(raw["evict_rogue_pods"], bool):
            raise ValueError("limits.yaml: telemetry.evict_rogue_pods must be true or false")
        values["evict_rogue_pods"] = raw["evict_rogue_pods"]
    policy = TelemetryPolicy(**values)
    if policy.collapse_to_pct >= policy.collapse_from_pct:
        raise ValueError("limits.yaml: telemetry.collapse_to_pct must be below collapse_from_pct")
    return policy


# ------------------------------------------------------------------ attribution


@dataclass(frozen=True, slots=True)
class Owner:
    """The ledger's record of an admitted pod, and the workload it belongs to."""

    owner: str
    team: str
    workload: str
    """`Kind namespace/name` of the admitted workload the pod belongs to (the pod itself if none)."""


@dataclass(frozen=True, slots=True)
class Share:
    """A pod's share of one sample: the GPU time it is charged for."""

    pod: PodRef
    owner: Owner | None
    fraction: float


def holders(sample: GpuSample) -> list[PodRef]:
    """The pods holding a GPU: the one it is allocated to, else those running processes on it."""
    if sample.allocated is not None:
        return [sample.allocated]
    seen: dict[PodRef, None] = {}
    for p in sample.processes:
        if p.pod is not None:
            seen.setdefault(p.pod, None)
    return list(seen)


def attribute(sample: GpuSample, owners: Mapping[PodRef, Owner | None]) -> list[Share]:
    """Split a sample's GPU time equally between the pods holding the GPU."""
    pods = holders(sample)
    return [Share(pod, owners.get(pod), 1.0 / len(pods)) for pod in pods]


# ------------------------------------------------------------------ alerts


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
    """The policy asks for this pod to be evicted (rogue process in a pod)."""
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
                 policy: TelemetryPolicy, exempt_namespaces: frozenset[str] = frozenset()
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
              evict=policy.evict_rogue_pods and pod is not None,
              details={"pid": proc.pid, "pod_uid": proc.pod_uid, "container_id": proc.container_id})

    # Idle: allocated (or held by an admitted pod) yet at or below the idle threshold.
    held = bool(holders(sample))
    idle = held and sample.utilization is not None and sample.utilization <= policy.idle_utilization_pct
    idle_since = (state.idle_since if state.idle_since is not None else sample.ts) if idle else None
    idle_alerted = state.idle_alerted if idle else False
    if idle and idle_since is not None and not idle_alerted and sample.ts - idle_since >= policy.idle_after_s:
        pod = holders(sample)[0]
        alert(IDLE, f"{where}: allocated to pod {pod} and at most {policy.idle_utilization_pct:g}% busy for "
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


def collapse(pods: Sequence[PodUtil], policy: TelemetryPolicy, now: float) -> tuple[bool, bool, int, int]:
    """(collapsed, recovered, pods that collapsed, pods counted) for one workload's recent pods.

    Collapsed: at least `collapse_min_pods` pods reported within the window and at least
    `collapse_fraction` of them fell from `collapse_from_pct` or more to `collapse_to_pct` or
    less in their last sample. Recovered: more than half are above `collapse_to_pct` again.
    """
    recent = [p for p in pods if now - p.ts <= policy.collapse_window_s]
    fell = sum(1 for p in recent if p.previous is not None and p.previous >= policy.collapse_from_pct
               and p.current <= policy.collapse_to_pct)
    up = sum(1 for p in recent if p.current > policy.collapse_to_pct)
    enough = len(recent) >= policy.collapse_min_pods
    collapsed = enough and fell >= math.ceil(policy.collapse_fraction * len(recent))
    return collapsed, up * 2 > len(recent), fell, len(recent)


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
