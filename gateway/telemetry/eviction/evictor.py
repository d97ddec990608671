"""Evicting a pod through the Kubernetes API (the eviction subresource, so PodDisruptionBudgets hold).

Used for the optional eviction of pods that run rogue GPU processes (limits.yaml
`telemetry.evict_rogue_pods`, docs/agent.md). The caller audits every attempt.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Evictor(Protocol):
    def evict(self, namespace: str, name: str) -> str:
        """Evict the pod; returns what happened in words. Raises RuntimeError when it could not."""
        ...


class KubernetesEvictor:
    """POST pods/eviction with the gateway's service account (in cluster) or a kubeconfig."""

    def __init__(self, api_client: Any | None = None) -> None:
        self._client = api_client
        self._lock = threading.Lock()

    def _api(self) -> Any:
        from kubernetes import client

        from gateway.kube import api_client

        with self._lock:
            if self._client is None:
                self._client = api_client()
            return client.CoreV1Api(self._client)

    def evict(self, namespace: str, name: str) -> str:
        from kubernetes import client

        try:
            api = self._api()
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
            api.create_namespaced_pod_eviction(name, namespace, body)
        except Exception as exc:  # config, network or API errors: all mean "not evicted"
            status = getattr(exc, "status", None)
            reason = getattr(exc, "reason", None) or str(exc)
            raise RuntimeError(f"eviction of pod {namespace}/{name} failed: {status or ''} {reason}".strip()) from exc
        return f"pod {namespace}/{name} evicted"
