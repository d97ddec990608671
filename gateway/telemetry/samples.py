"""A reading of a GPU (the one type for it, from NVML on the node to the gateway's store) and
the pods and processes it names."""

from __future__ import annotations

from dataclasses import dataclass


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
    """One reading of one GPU: what NVML reads on the node (gateway.telemetry.agent.nvml), and,
    stamped with the node, the time and the interval it stands for, what a report carries to the
    gateway."""

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
