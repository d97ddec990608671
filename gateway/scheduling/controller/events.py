"""The core/v1 Events the controller's reconcilers create (`kubectl describe`, `kubectl get events`)."""

from __future__ import annotations

from typing import Any

from gateway.scheduling.controller.lease import micro_time

COMPONENT = "gpu-gateway-controller"


def kube_event(*, namespace: str, generate_name: str, involved: dict[str, Any], reason: str, type_: str,
               message: str, now: float) -> dict[str, Any]:
    """One Event about `involved` (its apiVersion, kind, name...), created in `namespace`."""
    stamp = micro_time(now)[:19] + "Z"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": generate_name, "namespace": namespace},
        "involvedObject": involved, "reason": reason, "type": type_, "message": message,
        "source": {"component": COMPONENT}, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "reportingComponent": COMPONENT, "reportingInstance": "gpu-gateway",
    }
