"""Which container and pod a process runs in, from the text of `/proc/<pid>/cgroup`.

The kubelet puts every pod in a cgroup named after the pod's UID and every container in a
child cgroup named after its container ID. The shapes differ by cgroup driver and runtime:

    cgroupfs driver (v1 and v2)   /kubepods/burstable/pod<uid>/<64-hex id>
                                  /kubepods/pod<uid>/crio-<id>                 (CRI-O)
    systemd driver (v1 and v2)    /kubepods.slice/kubepods-burstable.slice/
                                    kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
                                  .../crio-<id>.scope, .../docker-<id>.scope

cgroup v1 lists one line per hierarchy (`4:memory:/kubepods/...`), v2 one line `0::/...`.
A process seen from inside another cgroup namespace may show a path with `/../` prefixes;
the pod and container segments are found wherever they are. A container outside Kubernetes
(`/docker/<id>`, `system.slice/docker-<id>.scope`) has a container ID and no pod; a host
process has neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_POD = re.compile(rf"(?:^|[/-])pod({_UID})(?:\.slice)?(?=/|$)")
_CONTAINER = re.compile(
    r"(?:^|/)(?P<prefix>cri-containerd-|crio-|docker-|containerd-|cri-o-)?(?P<id>[0-9a-f]{64})(?:\.scope)?(?=/|$)"
)
_RUNTIMES = {"cri-containerd-": "containerd", "containerd-": "containerd", "crio-": "cri-o", "cri-o-": "cri-o",
             "docker-": "docker"}
_QOS = re.compile(r"kubepods[-/.](?:slice/kubepods-)?(burstable|besteffort)")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """Where a process runs: its pod's UID ("" outside Kubernetes) and its container."""

    pod_uid: str
    container_id: str
    runtime: str
    """containerd, cri-o, docker, or "" when the path does not say (cgroupfs driver)."""
    qos: str = ""
    """guaranteed, burstable or besteffort (kubepods only)."""
    cgroup_version: int = 2


def parse_cgroup(text: str) -> ContainerRef | None:
    """The container of a process from its `/proc/<pid>/cgroup`, None for a host process.

    Raises ValueError when the text is not a cgroup file (no `id:controllers:path` line).
    """
    paths: list[str] = []
    version = 2
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError(f"not a /proc/<pid>/cgroup line: {line[:80]!r}")
        if parts[0] != "0" or parts[1]:
            version = 1
        paths.append(parts[2])
    if not paths:
        raise ValueError("empty cgroup file")
    # v1: every hierarchy names the same cgroup; prefer one that names a pod and a container.
    best: ContainerRef | None = None
    for path in paths:
        ref = _parse_path(path, version)
        if ref is not None and (best is None or (ref.pod_uid and ref.container_id and not
                                                 (best.pod_uid and best.container_id))):
            best = ref
    return best


def _parse_path(path: str, version: int) -> ContainerRef | None:
    pod = _POD.search(path)
    containers = list(_CONTAINER.finditer(path[pod.end():] if pod else path))
    if pod is None and not containers:
        return None
    uid = _normalise_uid(pod.group(1)) if pod else ""
    container_id, runtime = "", ""
    if containers:
        last = containers[-1]
        container_id = last.group("id")
        runtime = _RUNTIMES.get(last.group("prefix") or "", "")
    if not runtime and pod is None and "docker" in path:
        runtime = "docker"
    qos = ""
    if pod is not None:
        found = _QOS.search(path)
        qos = found.group(1) if found else "guaranteed"
    return ContainerRef(uid, container_id, runtime, qos, version)


def _normalise_uid(raw: str) -> str:
    """The systemd driver writes the UID's dashes as underscores; mirror pods' UIDs are 32 hex."""
    return raw.replace("_", "-")
