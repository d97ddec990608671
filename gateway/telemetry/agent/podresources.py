"""The kubelet's pod-resources API (gRPC on a unix socket): which pod holds which GPU.

The answer is decoded by the pure `gateway.telemetry.podresources`. A kubelet that cannot be
reached or answers badly is logged (once per problem) and the last good answer is kept,
so a GPU keeps its pod through a kubelet restart.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from gateway.telemetry.podresources import gpu_allocations
from gateway.telemetry.samples import PodRef

log = logging.getLogger("gateway.agent")

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
_LIST = "/v1.PodResourcesLister/List"


class KubeletPodResources:
    def __init__(self, socket: Path = DEFAULT_SOCKET, *, timeout_s: float = 5.0) -> None:
        import grpc

        self.socket = Path(socket)
        self._grpc: Any = grpc
        self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        self._list = self._channel.unary_unary(_LIST, request_serializer=None, response_deserializer=None)
        self._timeout_s = timeout_s
        self._last: dict[str, PodRef] = {}
        self._problem = ""
        self._lock = threading.Lock()

    def allocations(self) -> dict[str, PodRef]:
        """GPU UUID -> pod, as the kubelet says now (or as it last said, when it cannot be asked)."""
        with self._lock:
            try:
                answer = self._list(b"", timeout=self._timeout_s)
                self._last = gpu_allocations(answer)
                self._problem = ""
            except (self._grpc.RpcError, ValueError) as exc:
                problem = f"kubelet pod-resources API at {self.socket}: {_reason(exc)}"
                if problem != self._problem:
                    log.warning("%s (keeping the last answer)", problem)
                    self._problem = problem
            return dict(self._last)

    def close(self) -> None:
        self._channel.close()


def _reason(exc: Exception) -> str:
    """A gRPC error's status and details (its str() is a multi-line debug dump), else the error."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)
