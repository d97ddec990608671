"""From a GPU process to its pod: `/proc/<pid>/cgroup` → pod UID → namespace/name.

The cgroup text is parsed by the pure `gateway.telemetry.cgroup`. A pod UID is named by a
`PodDirectory`: the scripted table of a simulation, or the API server's list of the pods on
this node (`KubePods`, cached, refreshed when an unknown UID turns up, at most every 30 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gateway.telemetry.cgroup import ContainerRef, parse_cgroup
from gateway.telemetry.samples import PodRef

log = logging.getLogger("gateway.agent")


class CgroupReader(Protocol):
    def cgroup(self, pid: int) -> str | None:
        """The text of /proc/<pid>/cgroup, None when the process is gone or unreadable."""
        ...


class ProcCgroups:
    """Reads `<proc_root>/<pid>/cgroup` (the agent needs the host's PID namespace: hostPID)."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.proc_root = Path(proc_root)

    def cgroup(self, pid: int) -> str | None:
        try:
            return (self.proc_root / str(int(pid)) / "cgroup").read_text()
        except (OSError, ValueError):
            return None


def container_of(reader: CgroupReader, pid: int) -> ContainerRef | None:
    """The container of `pid`, None for a host process or one that is gone or unreadable."""
    text = reader.cgroup(pid)
    if text is None:
        return None
    try:
        return parse_cgroup(text)
    except ValueError as exc:
        log.warning("process %d: unreadable cgroup file: %s", pid, exc)
        return None


class PodDirectory(Protocol):
    def pod(self, uid: str) -> PodRef | None: ...


class StaticPods:
    def __init__(self, pods: dict[str, PodRef]) -> None:
        self._pods = dict(pods)

    def pod(self, uid: str) -> PodRef | None:
        return self._pods.get(uid)


class KubePods:
    """The pods of one node from the API server (`spec.nodeName=<node>`), by UID."""

    def __init__(self, node: str, *, lister: Callable[[str], dict[str, PodRef]] | None = None,
                 min_refresh_s: float = 30.0) -> None:
        self.node = node
        self._lister = lister or _list_node_pods
        self._min_refresh_s = min_refresh_s
        self._pods: dict[str, PodRef] = {}
        self._fetched = -1e18
        self._lock = threading.Lock()

    def pod(self, uid: str) -> PodRef | None:
        with self._lock:
            found = self._pods.get(uid)
            if found is None and time.monotonic() - self._fetched >= self._min_refresh_s:
                self._fetched = time.monotonic()
                try:
                    self._pods = self._lister(self.node)
                except Exception as exc:  # the API being unreachable must not stop sampling
                    log.warning("cannot list the pods of node %s: %s", self.node, exc)
                found = self._pods.get(uid)
            return found


def _list_node_pods(node: str) -> dict[str, PodRef]:
    from kubernetes import client

    from gateway.kube import api_client

    pods: Any = client.CoreV1Api(api_client()).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}",
                                                              _request_timeout=10)
    return {p.metadata.uid: PodRef(p.metadata.namespace, p.metadata.name) for p in pods.items}
