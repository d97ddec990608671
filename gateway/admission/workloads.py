"""Every workload kind reduced to one neutral shape: a list of pod sets.

A PodSet is (name, count, GPUs per pod, where its pod template lives). Policy and quota
speak only this shape. Each kind is a small adapter in `ADAPTERS`, or an entry the operator
registered in limits.yaml `workload_kinds` (admission/kinds.py); any other kind that still
carries pod templates is walked generically, so it is never silently passed.

Counts are worst case where the kind allows a range (autoscaling, elastic training). GPUs
the gateway cannot count are never counted as 0: the Workload lists why in `unresolved`
(a TrainJob whose GPUs come from its runtime, an unregistered kind that names a GPU where
the walker does not look, a fan-out without a bound) and policy decides what that means.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.admission.dra import PodClaim, pod_claims
from gateway.admission.kinds import KindRegistry, Located, evaluate
from gateway.admission.pointer import escape, is_object, resolve
from gateway.admission.quantity import MAX_GPUS, MAX_REPLICAS, gpu_count, replica_count
from gateway.errors import WorkloadError

DEFAULT_GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu", "gpu.intel.com/*")

#: Resources that match a GPU pattern but are not whole devices: Intel's plugin registers
#: shares of a GPU (`millicores` in thousandths, `memory.max` in bytes, `tiles`).
DEFAULT_NOT_GPU_RESOURCES = ("gpu.intel.com/millicores", "gpu.intel.com/memory.max", "gpu.intel.com/tiles")


class GpuMatcher:
    """Which extended resources are GPUs: shell-style patterns (e.g. `nvidia.com/mig-*`),
    less the exclusions (resources that measure a share of a device, not devices)."""

    __slots__ = ("_cache", "excluded", "patterns")

    def __init__(
        self,
        patterns: Sequence[str] = DEFAULT_GPU_RESOURCES,
        excluded: Sequence[str] = DEFAULT_NOT_GPU_RESOURCES,
    ) -> None:
        self.patterns = tuple(patterns)
        self.excluded = tuple(excluded)
        self._cache: dict[str, bool] = {}

    def __call__(self, resource: str) -> bool:
        hit = self._cache.get(resource)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(resource, p) for p in self.patterns) and not any(
                fnmatch.fnmatchcase(resource, p) for p in self.excluded
            )
            if len(self._cache) < 10_000:
                self._cache[resource] = hit
        return hit

    def names_gpu(self, text: str) -> bool:
        """Whether any text found in an object (a key, a value) is a GPU resource name; not
        cached, so that arbitrary strings do not crowd the resource names out of the cache."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        return "/" in text and len(text) <= 320 and any(
            fnmatch.fnmatchcase(text, p) for p in self.patterns
        ) and not any(fnmatch.fnmatchcase(text, p) for p in self.excluded)


# PodSet and Workload are values: treat them as immutable. They are not `frozen` because
# one request builds several, and a frozen dataclass's `__init__` (an `object.__setattr__`
# per field) costs several times a plain one; their GPU totals, which a decision reads many
# times, are computed once here.


@dataclass(slots=True)
class PodSet:
    """`count` pods from one template, each asking for `gpus_per_pod` (resource → devices).

    `template_path` is the JSON pointer of the pod template (an object with metadata and
    spec) inside the workload; "" for a bare Pod; None where the kind has no template.
    """

    name: str
    count: int
    gpus_per_pod: Mapping[str, int]
    template_path: str | None
    surge: int = 0
    """Pods of `count` that exist only during a rolling update (a Deployment's maxSurge)."""
    claims: tuple[PodClaim, ...] = ()
    """The DRA claims and claim templates each pod references (`spec.resourceClaims`). Their
    GPUs are in the ledger, not in the object: a decision adds them (admission/claims.py)."""
    shared: bool = False
    """A shared DRA ResourceClaim's GPUs, held once for the whole workload: no pods of its own."""
    gpus_each: int = field(init=False)
    """GPUs of one pod: the sum of `gpus_per_pod`."""
    gpus: int = field(init=False)
    """GPUs of the whole set: `count` x `gpus_each`."""

    def __post_init__(self) -> None:
        self.gpus_each = sum(self.gpus_per_pod.values())
        self.gpus = self.count * self.gpus_each


@dataclass(slots=True)
class Workload:
    kind: str
    group: str
    namespace: str
    name: str
    pod_sets: tuple[PodSet, ...]
    unresolved: tuple[str, ...] = ()
    """Why some of its GPUs cannot be counted, each a clause after the kind and name ("takes its
    GPUs from runtime x, which the gateway cannot read; set ..."); empty when all are counted."""
    gpus: int = field(init=False)
    """GPUs of every pod set together (worst case); only a lower bound while `unresolved`."""
    gpu_capable: bool = field(init=False, repr=False, compare=False)
    """Whether any pod set asks for GPUs per pod, whatever its count (0 replicas, suspended)."""

    def __post_init__(self) -> None:
        self.gpus = sum(ps.gpus for ps in self.pod_sets)
        self.gpu_capable = any(ps.gpus_each for ps in self.pod_sets)

    @property
    def pods(self) -> int:
        return sum(ps.count for ps in self.pod_sets)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def describe_gpus(self) -> str:
        """`1000 pods x 8 nvidia.com/gpu`: pod sets with the same per-pod GPUs are merged."""
        merged: dict[tuple[tuple[str, int], ...], int] = {}
        for ps in self.pod_sets:
            if ps.gpus and not ps.shared:
                key = tuple(sorted((r, n) for r, n in ps.gpus_per_pod.items() if n))
                merged[key] = merged.get(key, 0) + ps.count
        parts = []
        for key, count in merged.items():
            per_pod = " + ".join(f"{n} {r}" for r, n in key)
            parts.append(f"{count} {'pod' if count == 1 else 'pods'} x {per_pod}")
        parts.extend(f"{n} {r} shared by its pods" for ps in self.pod_sets if ps.shared
                     for r, n in ps.gpus_per_pod.items() if n)
        surge = sum(ps.surge for ps in self.pod_sets if ps.gpus_each)
        if surge:
            parts.append(f"counting {surge} surge {'pod' if surge == 1 else 'pods'} of a rolling update; "
                         f"strategy.rollingUpdate.maxSurge: 0 avoids them")
        counted = ", ".join(parts) if parts else "no GPUs"
        if self.unresolved:
            return f"{counted}, plus GPUs it cannot count: it {'; and it '.join(self.unresolved)}"
        return counted


# ---------------------------------------------------------------- pod arithmetic


class _Misplaced(Exception):
    """A problem inside a pod spec, raised before the spec's location is known.

    Its text continues the location (" is not an object", ".containers[0]: resources is
    not an object"). The caller prefixes the location only on failure, so that reading a
    well-formed workload formats no field paths at all.
    """

    def at(self, where: str) -> WorkloadError:
        return WorkloadError(f"{where}{self}")


def _container_gpus(container: Any, is_gpu: GpuMatcher) -> dict[str, int]:
    """GPUs one container asks for. Errors name fields relative to the container."""
    if not is_object(container):
        raise WorkloadError("container is not an object")
    resources = container.get("resources") or {}
    if not is_object(resources):
        raise WorkloadError("resources is not an object")
    found: dict[str, int] = {}
    for section in ("limits", "requests"):
        values = resources.get(section) or {}
        if not is_object(values):
            raise WorkloadError(f"resources.{section} is not an object")
        for resource, quantity in values.items():
            if is_gpu(resource):
                # Extended resources cannot be overcommitted: requests default to limits and
                # must equal them. Take the larger if they differ (the API server rejects it).
                n = gpu_count(quantity, resource)
                if n > found.get(resource, -1):
                    found[resource] = n
    return found


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for r, n in more.items():
        into[r] = into.get(r, 0) + n


def _gpus_by_container(spec: Mapping[str, Any], key: str, is_gpu: GpuMatcher) -> list[tuple[Any, dict[str, int]]]:
    """Each container of `spec[key]` (`containers`, `initContainers`) with the GPUs it asks for."""
    containers = spec.get(key) or []
    if not isinstance(containers, list):
        raise _Misplaced(f".{key} is not a list")
    found = []
    for i, container in enumerate(containers):
        try:
            found.append((container, _container_gpus(container, is_gpu)))
        except WorkloadError as exc:
            raise _Misplaced(f".{key}[{i}]: {exc}") from exc
    return found


def pod_gpus(spec: Any, is_gpu: GpuMatcher, where: str = "spec") -> dict[str, int]:
    """GPUs one pod holds, as the scheduler counts them.

    Effective request = max(sum of app containers + sidecars, each init container + the
    sidecars started before it), per resource (Kubernetes' rule, sidecars included).
    `where` locates `spec` in error messages.
    """
    try:
        return _pod_gpus(spec, is_gpu)
    except _Misplaced as exc:
        raise exc.at(where) from exc


def _pod_gpus(spec: Any, is_gpu: GpuMatcher, more: Mapping[str, int] | None = None) -> dict[str, int]:
    """`pod_gpus`; `more` are GPUs of app containers kept outside `spec` (registered kinds)."""
    if spec is None:
        return {r: n for r, n in (more or {}).items() if n}
    if not is_object(spec):
        raise _Misplaced(" is not an object")
    app: dict[str, int] = dict(more or {})
    for _, gpus in _gpus_by_container(spec, "containers", is_gpu):
        _add(app, gpus)
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container, gpus in _gpus_by_container(spec, "initContainers", is_gpu):
        if container.get("restartPolicy") == "Always":  # an object: _container_gpus checked it
            _add(sidecars, gpus)
            continue
        for r, n in gpus.items():
            init_peak[r] = max(init_peak.get(r, 0), n + sidecars.get(r, 0))
    total = dict(app)
    _add(total, sidecars)
    for r, n in init_peak.items():
        total[r] = max(total.get(r, 0), n)
    return {r: n for r, n in total.items() if n}


# ---------------------------------------------------------------- field helpers


def _get(obj: Any, *path: str) -> Any:
    """`obj[path[0]][path[1]]...`, or None where a field is missing or not an object."""
    for key in path:
        if type(obj) is not dict and not is_object(obj):
            return None
        obj = obj.get(key)
    return obj


def _count(value: Any, default: int, where: str) -> int:
    """A replica-like count: missing means the Kubernetes default; negative or absurd is refused."""
    return default if value is None else replica_count(value, where)


def _template_spec(template: Any) -> Any:
    return template.get("spec") if is_object(template) else None


def _job_pods(job_spec: Any, where: str) -> int:
    """Pods a batch/v1 Job runs at once: parallelism (default 1), capped by completions."""
    parallelism = _count(_get(job_spec, "parallelism"), 1, f"{where}.parallelism")
    completions = _get(job_spec, "completions")
    if completions is not None:
        parallelism = min(parallelism, _count(completions, 1, f"{where}.completions"))
    return parallelism


RawPodSet = tuple[str, int, str | None, Any]  # name, count, template path, pod spec


def _suspended(spec: Any, *path: str) -> bool:
    """Whether a kind's suspend flag (`spec.suspend`, `spec.runPolicy.suspend`) is set: a
    suspended workload runs no pods until it is resumed, and resuming it is a modify."""
    return _get(spec, *path) is True


def _surge(spec: Any, replicas: int) -> int:
    """Extra pods a Deployment's rolling update may run: maxSurge (default 25%, rounded up)."""
    strategy = _get(spec, "strategy")
    if _get(strategy, "type") == "Recreate":
        return 0
    value = _get(strategy, "rollingUpdate", "maxSurge")
    if value is None:
        return surge_pods(replicas, "25%")
    if isinstance(value, str) and (value.isdigit() or (value.endswith("%") and value[:-1].isdigit())):
        return surge_pods(replicas, value)
    if isinstance(value, str):
        raise WorkloadError(f"spec.strategy.rollingUpdate.maxSurge must be a count or a percentage, not {value!r}")
    return _count(value, 0, "spec.strategy.rollingUpdate.maxSurge")


def _pod(obj: Mapping[str, Any]) -> list[RawPodSet]:
    return [("pod", 1, "", obj.get("spec"))]


def _replicated(obj: Mapping[str, Any]) -> list[RawPodSet]:
    spec = obj.get("spec")
    n = _count(_get(spec, "replicas"), 1, "spec.replicas")
    return [("main", n, "/spec/template", _get(spec, "template", "spec"))]


def _deployment(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """Deployment: `replicas` plus the rolling update's surge, which runs beside them."""
    spec = obj.get("spec")
    n = _count(_get(spec, "replicas"), 1, "spec.replicas")
    return [("main", n + _surge(spec, n), "/spec/template", _get(spec, "template", "spec"))]


def _daemonset(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """One pod per node: its count is the cluster's, so each pod is charged when it is made."""
    return [("main", 1, "/spec/template", _get(obj.get("spec"), "template", "spec"))]


def _job(obj: Mapping[str, Any]) -> list[RawPodSet]:
    spec = obj.get("spec")
    n = 0 if _suspended(spec, "suspend") else _job_pods(spec, "spec")
    return [("main", n, "/spec/template", _get(spec, "template", "spec"))]


def _cronjob(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """One Job's pods; every Job the CronJob controller makes is charged on its own."""
    job_spec = _get(obj, "spec", "jobTemplate", "spec")
    n = _job_pods(job_spec, "spec.jobTemplate.spec")
    return [("main", n, "/spec/jobTemplate/spec/template", _get(job_spec, "template", "spec"))]


def _jobset(obj: Mapping[str, Any]) -> list[RawPodSet]:
    sets: list[RawPodSet] = []
    rjobs = _get(obj, "spec", "replicatedJobs") or []
    if not isinstance(rjobs, list):
        raise WorkloadError("spec.replicatedJobs is not a list")
    suspended = _suspended(obj.get("spec"), "suspend")
    for i, rj in enumerate(rjobs):
        where = f"spec.replicatedJobs[{i}]"
        replicas = 0 if suspended else _count(_get(rj, "replicas"), 1, f"{where}.replicas")
        job_spec = _get(rj, "template", "spec")
        pods = _job_pods(job_spec, f"{where}.template.spec")
        name = str(_get(rj, "name") or i)
        path = f"/spec/replicatedJobs/{i}/template/spec/template"
        sets.append((name, replicas * pods, path, _get(job_spec, "template", "spec")))
    return sets


def _kubeflow(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """PyTorchJob, MPIJob, TFJob, XGBoostJob, PaddleJob, JAXJob: `spec.<x>ReplicaSpecs`."""
    spec = obj.get("spec")
    if not is_object(spec):
        return []
    elastic_max = _get(spec, "elasticPolicy", "maxReplicas")
    suspended = _suspended(spec, "runPolicy", "suspend")
    sets: list[RawPodSet] = []
    for key, roles in spec.items():
        if not key.endswith("ReplicaSpecs"):
            continue
        if not is_object(roles):
            raise WorkloadError(f"spec.{key} is not an object")
        pointer = f"/spec/{escape(key)}"
        for role, rs in roles.items():
            n = _count(_get(rs, "replicas"), 1, f"spec.{key}.{role}.replicas")
            if elastic_max is not None and role == "Worker":
                n = max(n, _count(elastic_max, 1, "spec.elasticPolicy.maxReplicas"))
            if suspended:
                n = 0
            path = f"{pointer}/{escape(str(role))}/template"
            sets.append((str(role), n, path, _get(rs, "template", "spec")))
    return sets


def _trainjob(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """Kubeflow Trainer v2: numNodes x resourcesPerNode; the pod template is in the runtime."""
    trainer = _get(obj, "spec", "trainer")
    nodes = _count(_get(trainer, "numNodes"), 1, "spec.trainer.numNodes")
    if _suspended(obj.get("spec"), "suspend"):
        nodes = 0
    per_node = _get(trainer, "resourcesPerNode")
    fake_spec = {"containers": [{"resources": per_node}]} if per_node is not None else None
    return [("node", nodes, None, fake_spec)]


def _trainjob_unresolved(obj: Mapping[str, Any]) -> list[str]:
    """Without resourcesPerNode a TrainJob's GPUs are those of its runtime's template."""
    if _get(obj, "spec", "trainer", "resourcesPerNode") is not None:
        return []
    runtime = _get(obj, "spec", "runtimeRef", "name")
    named = f"runtime {runtime}" if isinstance(runtime, str) and runtime else "its runtime"
    return [f"takes its GPUs from {named}, which the gateway cannot read; set spec.trainer.resourcesPerNode"]


def _ray_cluster(cluster: Any, prefix: str, where: str) -> list[RawPodSet]:
    if cluster is None:
        return []
    autoscaling = bool(_get(cluster, "enableInTreeAutoscaling"))
    head = _get(cluster, "headGroupSpec", "template", "spec")
    sets: list[RawPodSet] = [("head", 1, f"{prefix}/headGroupSpec/template", head)]
    groups = _get(cluster, "workerGroupSpecs") or []
    if not isinstance(groups, list):
        raise WorkloadError(f"{where}.workerGroupSpecs is not a list")
    for i, g in enumerate(groups):
        w = f"{where}.workerGroupSpecs[{i}]"
        n = max(
            _count(_get(g, "replicas"), 0, f"{w}.replicas"),
            _count(_get(g, "minReplicas"), 0, f"{w}.minReplicas"),
        )
        if autoscaling:
            n = max(n, _count(_get(g, "maxReplicas"), MAX_REPLICAS, f"{w}.maxReplicas"))
        hosts = _count(_get(g, "numOfHosts"), 1, f"{w}.numOfHosts")
        name = str(_get(g, "groupName") or i)
        path = f"{prefix}/workerGroupSpecs/{i}/template"
        sets.append((name, n * hosts, path, _get(g, "template", "spec")))
    return sets


def _raycluster(obj: Mapping[str, Any]) -> list[RawPodSet]:
    sets = _ray_cluster(obj.get("spec"), "/spec", "spec")
    return _none_running(sets) if _suspended(obj.get("spec"), "suspend") else sets


def _none_running(sets: list[RawPodSet]) -> list[RawPodSet]:
    return [(name, 0, path, spec) for name, _, path, spec in sets]


def _rayjob(obj: Mapping[str, Any]) -> list[RawPodSet]:
    cluster = _get(obj, "spec", "rayClusterSpec")
    sets = _ray_cluster(cluster, "/spec/rayClusterSpec", "spec.rayClusterSpec")
    submitter = _get(obj, "spec", "submitterPodTemplate")
    if submitter is not None:
        sets.append(("submitter", 1, "/spec/submitterPodTemplate", _template_spec(submitter)))
    return _none_running(sets) if _suspended(obj.get("spec"), "suspend") else sets


def _rayservice(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """Its cluster twice: a zero-downtime upgrade runs the new cluster beside the old one."""
    cluster = _get(obj, "spec", "rayClusterConfig")
    sets = _ray_cluster(cluster, "/spec/rayClusterConfig", "spec.rayClusterConfig")
    return [(name, count * 2, path, spec) for name, count, path, spec in sets]


def _volcano(obj: Mapping[str, Any]) -> list[RawPodSet]:
    tasks = _get(obj, "spec", "tasks") or []
    if not isinstance(tasks, list):
        raise WorkloadError("spec.tasks is not a list")
    sets: list[RawPodSet] = []
    for i, t in enumerate(tasks):
        n = _count(_get(t, "replicas"), 1, f"spec.tasks[{i}].replicas")
        name = str(_get(t, "name") or i)
        sets.append((name, n, f"/spec/tasks/{i}/template", _get(t, "template", "spec")))
    return sets


def _lws_surge(spec: Any) -> Any:
    """A LeaderWorkerSet's rolling-update maxSurge (default 0): whole groups beside `replicas`."""
    value = _get(spec, "rolloutStrategy", "rollingUpdateConfiguration", "maxSurge")
    return 0 if value is None else value


def _leaderworkerset(obj: Mapping[str, Any]) -> list[RawPodSet]:
    spec = obj.get("spec")
    groups = _count(_get(spec, "replicas"), 1, "spec.replicas")
    surge = _lws_surge(spec)
    if isinstance(surge, str) and not (surge.isdigit() or (surge.endswith("%") and surge[:-1].isdigit())):
        raise WorkloadError(f"spec.rolloutStrategy.rollingUpdateConfiguration.maxSurge must be a count or a "
                            f"percentage, not {surge!r}")
    groups += surge_pods(groups, surge) if isinstance(surge, str) else _count(
        surge, 0, "spec.rolloutStrategy.rollingUpdateConfiguration.maxSurge")
    lwt = _get(spec, "leaderWorkerTemplate")
    size = _count(_get(lwt, "size"), 1, "spec.leaderWorkerTemplate.size")
    base = "/spec/leaderWorkerTemplate"
    worker = _get(lwt, "workerTemplate", "spec")
    if _get(lwt, "leaderTemplate") is None:
        return [("worker", groups * size, f"{base}/workerTemplate", worker)]
    return [
        ("leader", groups, f"{base}/leaderTemplate", _get(lwt, "leaderTemplate", "spec")),
        ("worker", groups * max(size - 1, 0), f"{base}/workerTemplate", worker),
    ]


_MULTIPLIERS = ("replicas", "parallelism", "maxReplicas", "numNodes", "size")


def _generic(obj: Mapping[str, Any]) -> list[RawPodSet]:
    """Any object: every nested pod template, times the replica-like counts above it.

    Where one level has several counts (`replicas` and `maxReplicas`), the largest is the
    worst case. A bare pod spec (an object with a `containers` list of objects, as KServe's
    predictor) counts too; it has no template path, having no pod metadata of its own.
    """
    if isinstance(_get(obj, "spec", "containers"), list):
        return [("pod", 1, "", obj.get("spec"))]
    sets: list[RawPodSet] = []

    def walk(node: Any, path: str, mult: int, depth: int) -> None:
        if depth > 32:
            raise WorkloadError("object is nested too deeply to read")
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}/{i}", mult, depth + 1)
            return
        if not is_object(node):
            return
        counts = [
            _count(value, 1, f"{_dotted(path)}.{key}")
            for key in _MULTIPLIERS
            if isinstance(value := node.get(key), int) and not isinstance(value, bool)
        ]
        here = mult * max(counts, default=1)
        if isinstance(_get(node, "spec", "containers"), list):
            sets.append((_set_name(path), here, path, node["spec"]))
            return
        if _is_pod_spec(node):  # counts beside the containers apply, as KServe's minReplicas
            sets.append((_set_name(path), here, None, node))
            return
        for key, child in node.items():
            walk(child, f"{path}/{escape(str(key))}", here, depth + 1)

    walk(obj.get("spec"), "/spec", 1, 0)
    return sets


def _is_pod_spec(node: Mapping[str, Any]) -> bool:
    containers = node.get("containers")
    return (
        isinstance(containers, list)
        and bool(containers)
        and all(is_object(c) for c in containers)
    )


def _set_name(path: str) -> str:
    """`template` for /spec/template, `pods[2]` for /spec/pods/2."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")]
    if tokens[-1].isdigit() and len(tokens) > 2:
        return f"{tokens[-2]}[{tokens[-1]}]"
    return tokens[-1]


def _dotted(path: str) -> str:
    """A JSON pointer as a field path for messages: /spec/tasks/0 → spec.tasks.0."""
    return path.lstrip("/").replace("/", ".")


Adapter = Callable[[Mapping[str, Any]], list[RawPodSet]]

#: The workload kinds gpu-gateway knows, by (API group, kind). One line per integration.
ADAPTERS: dict[tuple[str, str], Adapter] = {
    ("", "Pod"): _pod,
    ("", "ReplicationController"): _replicated,
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _replicated,
    ("apps", "ReplicaSet"): _replicated,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("jobset.x-k8s.io", "JobSet"): _jobset,
    ("kubeflow.org", "PyTorchJob"): _kubeflow,
    ("kubeflow.org", "MPIJob"): _kubeflow,
    ("kubeflow.org", "TFJob"): _kubeflow,
    ("kubeflow.org", "XGBoostJob"): _kubeflow,
    ("kubeflow.org", "PaddleJob"): _kubeflow,
    ("kubeflow.org", "JAXJob"): _kubeflow,
    ("trainer.kubeflow.org", "TrainJob"): _trainjob,
    ("ray.io", "RayJob"): _rayjob,
    ("ray.io", "RayCluster"): _raycluster,
    ("ray.io", "RayService"): _rayservice,
    ("batch.volcano.sh", "Job"): _volcano,
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): _leaderworkerset,
}

@dataclass(frozen=True, slots=True)
class ScaleRule:
    """How the `/scale` subresource's `spec.replicas` moves a kind's pod sets."""

    moves: tuple[tuple[int, int], ...]
    """(pod set index, pods per replica) of each pod set the count moves."""
    surge: Any = 0
    """A Deployment's maxSurge (an integer or a percentage), added on top of the count."""
    floor: int = 0
    """The count never falls below this for charging (an elastic job's maxReplicas)."""


def scale_rule(obj: Mapping[str, Any], group: str, kind: str, workload: Workload) -> ScaleRule | None:
    """Which pod sets `/scale` moves for this object, or None when no rule says (several pod
    sets and no known scale subresource: a scale is then refused as not computable)."""
    spec = obj.get("spec")
    if (group, kind) == ("apps", "Deployment"):
        strategy = _get(spec, "strategy")
        surge: Any = 0 if _get(strategy, "type") == "Recreate" else _get(strategy, "rollingUpdate", "maxSurge")
        return ScaleRule(((0, 1),), surge="25%" if surge is None else surge)
    if (group, kind) == ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"):
        size = _count(_get(spec, "leaderWorkerTemplate", "size"), 1, "spec.leaderWorkerTemplate.size")
        surge = _lws_surge(spec)
        if len(workload.pod_sets) == 2:
            return ScaleRule(((0, 1), (1, max(size - 1, 0))), surge=surge)
        return ScaleRule(((0, size),), surge=surge)
    if group == "kubeflow.org" and ADAPTERS.get((group, kind)) is _kubeflow:
        if _suspended(spec, "runPolicy", "suspend"):
            return ScaleRule(())
        workers = [i for i, ps in enumerate(workload.pod_sets) if ps.name == "Worker"]
        if not workers:
            return None
        elastic = _get(spec, "elasticPolicy", "maxReplicas")
        floor = _count(elastic, 0, "spec.elasticPolicy.maxReplicas") if elastic is not None else 0
        return ScaleRule(((workers[0], 1),), floor=floor)
    if ADAPTERS.get((group, kind)) is _replicated:
        return ScaleRule(((0, 1),))
    # Another kind with a scale subresource: one pod set whose count is `spec.replicas` times a
    # whole number of pods; anything else cannot be scaled from the record (a scale is refused).
    replicas = _get(spec, "replicas")
    if (len(workload.pod_sets) == 1 and isinstance(replicas, int) and not isinstance(replicas, bool)
            and replicas > 0 and workload.pod_sets[0].count % replicas == 0):
        return ScaleRule(((0, workload.pod_sets[0].count // replicas),))
    return None


def surge_pods(replicas: int, max_surge: Any) -> int:
    """Pods a rolling update may add to `replicas` for a maxSurge value (percentages round up)."""
    if isinstance(max_surge, str) and max_surge.endswith("%") and max_surge[:-1].isdigit():
        return -(-replicas * int(max_surge[:-1]) // 100)
    if isinstance(max_surge, str) and max_surge.isdigit():
        return int(max_surge)
    return max_surge if isinstance(max_surge, int) and not isinstance(max_surge, bool) and max_surge > 0 else 0


#: Kinds whose size is not in the object: each workload or pod they create is charged to their
#: owner on its own when it is made, so no schedule, concurrency policy or node count lets a
#: capped role exceed its caps (a CronJob's Jobs, a DaemonSet's pods, one per node).
CHARGES_CHILDREN = frozenset({("batch", "CronJob"), ("apps", "DaemonSet"), ("argoproj.io", "CronWorkflow")})

#: Kinds whose pod templates live in another object (a TrainJob's runtime, an InferenceService's
#: ServingRuntime, whose containers KServe merges into the predictor's): what their
#: controller makes cannot be read from them, so they are recorded even when they ask for no
#: GPUs, and what the controller makes for them is held to what they were charged for.
TEMPLATES_ELSEWHERE = frozenset({("trainer.kubeflow.org", "TrainJob"), ("serving.kserve.io", "InferenceService")})

#: Why an adapter's count may be incomplete, for the kinds where it can be.
CAVEATS: dict[tuple[str, str], Callable[[Mapping[str, Any]], list[str]]] = {
    ("trainer.kubeflow.org", "TrainJob"): _trainjob_unresolved,
}

#: Kinds that are never workloads even though they pass through the webhook.
NOT_WORKLOADS = frozenset({"Scale", "Eviction", "PodExecOptions", "PodAttachOptions",
                           "PodPortForwardOptions", "DeleteOptions"})


def is_known_kind(group: str, kind: str) -> bool:
    return (group, kind) in ADAPTERS


def read_workload(
    obj: Mapping[str, Any], group: str, kind: str, is_gpu: GpuMatcher,
    namespace: str = "", name: str = "", *, kinds: KindRegistry | None = None,
) -> Workload:
    """Reduce `obj` (of API `group` and `kind`) to a Workload, or raise WorkloadError.

    The kind's adapter reads it, else its entry in `kinds` (limits.yaml `workload_kinds`),
    else the generic walker.
    """
    if not is_object(obj):
        raise WorkloadError("object is not a JSON object")
    meta = obj.get("metadata") or {}
    if not is_object(meta):
        raise WorkloadError("metadata is not an object")
    adapter = ADAPTERS.get((group, kind))
    entry = kinds.get(group, kind) if kinds is not None and adapter is None else None
    unresolved: list[str] = []
    pod_sets = []
    if entry is not None:
        located, unresolved = evaluate(entry, obj)
        for loc in located:
            ps = PodSet(loc.name, loc.count, _located_gpus(loc, is_gpu), loc.template_path,
                        claims=pod_claims(loc.spec))
            if loc.unbounded and (ps.gpus_each or ps.claims):
                unresolved.append(loc.unbounded)
            pod_sets.append(ps)
    else:
        raw = (adapter or _generic)(obj)
        for set_name, count, path, spec in raw:
            try:
                per_pod = _pod_gpus(spec, is_gpu)
            except _Misplaced as exc:
                raise exc.at(f"{_dotted(path)}.spec" if path else "spec") from exc
            pod_sets.append(PodSet(set_name, count, per_pod, path, claims=pod_claims(spec)))
        if adapter is not None:
            caveat = CAVEATS.get((group, kind))
            unresolved = caveat(obj) if caveat is not None else []
        else:
            unresolved = _unread_gpu_names(obj, {id(spec) for *_, spec in raw}, is_gpu, group, kind)
    if (group, kind) == ("apps", "Deployment") and pod_sets:
        replicas = _count(_get(obj, "spec", "replicas"), 1, "spec.replicas")
        pod_sets[0].surge = pod_sets[0].count - replicas
    workload = Workload(
        kind=kind,
        group=group,
        namespace=namespace or str(meta.get("namespace") or ""),
        name=name or str(meta.get("name") or meta.get("generateName") or ""),
        pod_sets=tuple(pod_sets),
        unresolved=tuple(dict.fromkeys(unresolved)),
    )
    if workload.gpus > MAX_GPUS:
        raise WorkloadError(f"asks for an absurd number of GPUs ({workload.gpus})")
    return workload


def _located_gpus(loc: Located, is_gpu: GpuMatcher) -> dict[str, int]:
    """GPUs of one pod of a registered kind: its pod spec, more containers and GPU blocks."""
    more: dict[str, int] = {}
    for where, container in loc.containers:
        try:
            _add(more, _container_gpus(container, is_gpu))
        except WorkloadError as exc:
            raise WorkloadError(f"{where}: {exc}") from exc
    for where, block in loc.gpu_blocks:
        resource = block.get("name")
        if not isinstance(resource, str) or not resource:
            raise WorkloadError(f"{where}.name must name a resource, not {resource!r}")
        if is_gpu(resource):
            _add(more, {resource: gpu_count(block.get("quantity"), f"{where}.quantity: {resource}")})
    try:
        return _pod_gpus(loc.spec, is_gpu, more)
    except _Misplaced as exc:
        raise exc.at(loc.spec_where) from exc


#: Top-level fields never read for GPU names: the API server's and controllers' own.
_NOT_ASKED = frozenset({"apiVersion", "kind", "metadata", "status"})


def _unread_gpu_names(
    obj: Mapping[str, Any], read: set[int], is_gpu: GpuMatcher, group: str, kind: str,
) -> list[str]:
    """For a kind the generic walker read: GPU resource names (a key with a non-zero value, or
    a string such as `name: nvidia.com/gpu`) outside every pod spec it counted."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(v, k) for k, v in obj.items() if k not in _NOT_ASKED]
    while stack and len(found) < 4:
        node, where = stack.pop()
        if id(node) in read:
            continue
        if isinstance(node, str):
            if is_gpu.names_gpu(node):
                found.append(f"{node} at {where}")
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(node))))
        elif is_object(node):
            for key, value in reversed(list(node.items())):
                if isinstance(key, str) and is_gpu.names_gpu(key) and not _is_zero(value):
                    found.append(f"{key} at {where}")
                stack.append((value, f"{where}.{key}"))
    if not found:
        return []
    names = ", ".join(found[:3]) + (" and more" if len(found) > 3 else "")
    return [f"names {names}, where the gateway does not count GPUs; add a workload_kinds entry for "
            f"{group or 'core'}/{kind} to limits.yaml"]


def _is_zero(value: Any) -> bool:
    try:
        return gpu_count(value) == 0
    except WorkloadError:
        return False


def template_paths(workload: Workload) -> Iterator[str]:
    """JSON pointers of every pod template in the workload (not the bare pod's own path)."""
    seen: set[str] = set()
    for ps in workload.pod_sets:
        if ps.template_path and ps.template_path not in seen:
            seen.add(ps.template_path)
            yield ps.template_path


def stamped_paths(obj: Any, workload: Workload, templates: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """JSON pointers of everything in `obj` whose metadata says who owns what is made from it:
    the object itself, its pod templates, templates of workload objects a controller makes from
    it (a CronJob's Jobs, a JobSet's Jobs), and volume-claim templates whose PVCs a controller
    creates (StatefulSet `volumeClaimTemplates`, ephemeral volumes). The mutating webhook stamps
    owner and team on each; the validating webhook checks what a person writes there.
    `templates` are the object's nodes by pointer when already read (access.pod_templates)."""
    pod_templates = [ps.template_path for ps in workload.pod_sets if ps.template_path is not None]
    found = ["", *(p for p in pod_templates if p)]
    spec = obj.get("spec") if is_object(obj) else None
    if is_object(spec):
        if is_object(spec.get("jobTemplate")):
            found.append("/spec/jobTemplate")
        jobs = spec.get("replicatedJobs")
        if isinstance(jobs, list):
            found += [f"/spec/replicatedJobs/{i}/template" for i, job in enumerate(jobs)
                      if is_object(job) and is_object(job.get("template"))]
        claims = spec.get("volumeClaimTemplates")
        if isinstance(claims, list):
            found += [f"/spec/volumeClaimTemplates/{i}" for i, c in enumerate(claims) if is_object(c)]
    for pointer in dict.fromkeys(pod_templates):  # a bare Pod ("") is its own template
        node = templates[pointer] if templates is not None and pointer in templates else resolve(obj, pointer)
        pod_spec = node.get("spec") if is_object(node) else None
        volumes = pod_spec.get("volumes") if is_object(pod_spec) else None
        if volumes and type(volumes) is list:
            for i, volume in enumerate(volumes):
                ephemeral = volume.get("ephemeral") if is_object(volume) else None
                if ephemeral is not None and is_object(ephemeral) and is_object(ephemeral.get("volumeClaimTemplate")):
                    found.append(f"{pointer}/spec/volumes/{i}/ephemeral/volumeClaimTemplate")
    return tuple(dict.fromkeys(found))
