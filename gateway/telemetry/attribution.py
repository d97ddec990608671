"""Whose GPU time a sample is: the pods holding the GPU, and their owners from the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.telemetry.samples import GpuSample, PodRef


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
