"""Properties of GPU counting, checked against rules written here independently."""

from __future__ import annotations

import copy
from typing import Any

from builders_workloads import (
    CORE_FILES,
    CRD_FILES,
    group_kind,
    load_any,
    resolve,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.admission.quantity import MAX_GPUS, gpu_count
from gateway.admission.workloads import (
    ADAPTERS,
    MAX_REPLICAS,
    GpuMatcher,
    Workload,
    pod_gpus,
    read_workload,
)
from gateway.errors import RequestError, WorkloadError

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MATCH = GpuMatcher()
GPU_RESOURCES = ["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.10gb", "gpu.intel.com/xe"]
OTHER_RESOURCES = ["cpu", "memory", "example.com/fpga", "gpu.intel.com/millicores"]

JSONish = Any


# ================================================================== quantities


def spelled(n: int) -> st.SearchStrategy[int | str]:
    """Ways a user writes the whole number n as a Kubernetes quantity."""
    forms: list[int | str] = [n, str(n), f"{n}000m", f"{n}.0", f"+{n}", f"{n}e0"]
    if n and n % 1000 == 0:
        forms.append(f"{n // 1000}k")
    if n and n % 1024 == 0:
        forms.append(f"{n // 1024}Ki")
    return st.sampled_from(forms)


@PROPERTIES
@given(st.integers(min_value=0, max_value=MAX_GPUS))
def test_integers_and_integer_strings_are_themselves(n):
    assert gpu_count(n) == n
    assert gpu_count(str(n)) == n


@PROPERTIES
@given(st.integers(min_value=0, max_value=MAX_GPUS // 1000))
def test_n_k_is_n_thousand(n):
    assert gpu_count(f"{n}k") == n * 1000
    assert gpu_count(f"{n}e3") == n * 1000


@PROPERTIES
@given(st.integers(min_value=0, max_value=MAX_GPUS))
def test_n_thousand_milli_is_n(n):
    assert gpu_count(f"{n}000m") == n


@PROPERTIES
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=999),
       st.sampled_from(["decimal", "milli", "float"]))
def test_any_non_integral_quantity_raises(whole, thousandths, form):
    value: str | float
    if form == "decimal":
        value = f"{whole}.{thousandths:03d}"
    elif form == "milli":
        value = f"{whole * 1000 + thousandths}m"
    else:
        value = whole + thousandths / 1000
    try:
        gpu_count(value)
    except WorkloadError as exc:
        assert "fractional" in str(exc)
    else:
        raise AssertionError(f"{value!r} was counted")


@PROPERTIES
@given(st.integers(min_value=1, max_value=10**6))
def test_negative_quantities_raise(n):
    for value in (-n, f"-{n}", f"-{n}k"):
        try:
            gpu_count(value)
        except WorkloadError:
            continue
        raise AssertionError(f"{value!r} was counted")


QUANTITY_TEXT = st.text(alphabet="0123456789.+-eEinumkKMGTP _", max_size=14)
ANY_QUANTITY = st.one_of(
    QUANTITY_TEXT, st.text(max_size=10), st.integers(), st.none(), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@PROPERTIES
@given(ANY_QUANTITY)
def test_gpu_count_returns_a_sane_count_or_raises_workload_error(value):
    try:
        n = gpu_count(value)
    except WorkloadError:
        return
    assert isinstance(n, int) and 0 <= n <= MAX_GPUS


# ================================================================== one pod, the Kubernetes rule


@st.composite
def containers(draw: st.DrawFn, *, init: bool = False) -> dict[str, Any]:
    """A container asking for a few GPU and non-GPU resources, in any valid spelling:
    limits only, requests only (as the gateway reads them), or both and equal."""
    c: dict[str, Any] = {"name": f"c{draw(st.integers(0, 99))}", "image": "x"}
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for resource in draw(st.lists(st.sampled_from(GPU_RESOURCES + OTHER_RESOURCES),
                                  unique=True, max_size=3)):
        n = draw(st.integers(0, 16))
        where = draw(st.sampled_from(["limits", "requests", "both"]))
        if where in ("limits", "both"):
            limits[resource] = draw(spelled(n))
        if where in ("requests", "both"):
            requests[resource] = draw(spelled(n))
    if limits or requests:
        c["resources"] = {k: v for k, v in (("limits", limits), ("requests", requests)) if v}
    if init and draw(st.booleans()):
        c["restartPolicy"] = "Always"
    return c


pod_specs = st.builds(
    lambda app, init: {"containers": app, **({"initContainers": init} if init else {})},
    st.lists(containers(), min_size=1, max_size=4),
    st.lists(containers(init=True), max_size=4),
)


def value_of(quantity: int | str) -> int:
    """The number a `spelled` form stands for (read here by hand, not by the parser)."""
    if isinstance(quantity, int):
        return quantity
    text = quantity.lstrip("+")
    for suffix, factor in (("000m", 1), ("k", 1000), ("Ki", 1024), ("e0", 1), (".0", 1)):
        if text.endswith(suffix):
            return int(text.removesuffix(suffix)) * factor
    return int(text)


def demand(container: dict[str, Any], resource: str) -> int:
    """What one container holds: its limit, else its request (the API server's defaulting)."""
    res = container.get("resources", {})
    value = res.get("limits", {}).get(resource, res.get("requests", {}).get(resource, 0))
    return value_of(value)


def kubernetes_pod_gpus(spec: dict[str, Any]) -> dict[str, int]:
    """Walk the pod's life: init containers one by one (sidecars stay up once started),
    then the app containers beside every sidecar. The pod holds its peak, per resource."""
    out: dict[str, int] = {}
    for resource in GPU_RESOURCES:
        peak = running_sidecars = 0
        for c in spec.get("initContainers", []):
            if c.get("restartPolicy") == "Always":
                running_sidecars += demand(c, resource)
                peak = max(peak, running_sidecars)
            else:
                peak = max(peak, running_sidecars + demand(c, resource))
        app = sum(demand(c, resource) for c in spec["containers"])
        peak = max(peak, running_sidecars + app)
        if peak:
            out[resource] = peak
    return out


@PROPERTIES
@given(pod_specs)
def test_pod_gpus_follow_the_kubernetes_rule(spec):
    assert pod_gpus(spec, MATCH) == kubernetes_pod_gpus(spec)


@PROPERTIES
@given(pod_specs)
def test_a_bare_pod_holds_what_its_spec_holds(spec):
    workload = read_workload({"metadata": {"name": "p"}, "spec": spec}, "", "Pod", MATCH)
    assert workload.gpus == sum(kubernetes_pod_gpus(spec).values())


# ================================================================== whole workloads

counts = st.integers(min_value=0, max_value=50)
maybe = st.one_of(st.none(), counts)


def tmpl(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": spec}


def with_(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop the fields drawn as None: the user left them out."""
    return {k: v for k, v in fields.items() if v is not None}


def job_pods(parallelism: int | None, completions: int | None) -> int:
    p = 1 if parallelism is None else parallelism
    return p if completions is None else min(p, completions)


Expected = list[tuple[int, dict[str, Any]]]  # (pods, pod spec) per pod set


@st.composite
def workloads(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], Expected]:
    """(group, kind, object, expected pod sets) for a random kind; counts computed here."""
    kind = draw(st.sampled_from(["Deployment", "StatefulSet", "Job", "CronJob", "JobSet",
                                 "PyTorchJob", "Volcano", "LeaderWorkerSet", "RayCluster",
                                 "TrainJob", "generic"]))
    spec_a, spec_b = draw(pod_specs), draw(pod_specs)
    if kind == "StatefulSet":
        r = draw(maybe)
        o = {"spec": with_({"replicas": r, "template": tmpl(spec_a)})}
        return "apps", kind, o, [(1 if r is None else r, spec_a)]
    if kind == "Deployment":  # counted with its rolling update's surge: maxSurge, 25% by default
        r, surge = draw(maybe), draw(st.one_of(st.none(), st.integers(0, 4), st.sampled_from(["0%", "50%", "100%"])))
        strategy = {"rollingUpdate": {"maxSurge": surge}} if surge is not None else None
        o = {"spec": with_({"replicas": r, "template": tmpl(spec_a), "strategy": strategy})}
        n = 1 if r is None else r
        pct = 25 if surge is None else int(surge[:-1]) if isinstance(surge, str) else None
        extra = -(-n * pct // 100) if pct is not None else surge
        return "apps", kind, o, [(n + extra, spec_a)]
    if kind == "Job":
        p, c = draw(maybe), draw(maybe)
        o = {"spec": with_({"parallelism": p, "completions": c, "template": tmpl(spec_a)})}
        return "batch", "Job", o, [(job_pods(p, c), spec_a)]
    if kind == "CronJob":
        p, c = draw(maybe), draw(maybe)
        job = with_({"parallelism": p, "completions": c, "template": tmpl(spec_a)})
        o = {"spec": {"schedule": "@daily", "jobTemplate": {"spec": job}}}
        return "batch", "CronJob", o, [(job_pods(p, c), spec_a)]
    if kind == "JobSet":
        rjobs, expected = [], []
        for i, spec in enumerate((spec_a, spec_b)):
            r, p, c = draw(maybe), draw(maybe), draw(maybe)
            job = with_({"parallelism": p, "completions": c, "template": tmpl(spec)})
            rjobs.append(with_({"name": f"j{i}", "replicas": r, "template": {"spec": job}}))
            expected.append(((1 if r is None else r) * job_pods(p, c), spec))
        return "jobset.x-k8s.io", "JobSet", {"spec": {"replicatedJobs": rjobs}}, expected
    if kind == "PyTorchJob":
        m, w, emax = draw(maybe), draw(maybe), draw(maybe)
        roles = {"Master": with_({"replicas": m, "template": tmpl(spec_a)}),
                 "Worker": with_({"replicas": w, "template": tmpl(spec_b)})}
        spec = with_({"pytorchReplicaSpecs": roles,
                      "elasticPolicy": None if emax is None else {"maxReplicas": emax}})
        workers = 1 if w is None else w
        if emax is not None:
            workers = max(workers, emax)
        return "kubeflow.org", kind, {"spec": spec}, [(1 if m is None else m, spec_a),
                                                      (workers, spec_b)]
    if kind == "Volcano":
        r1, r2 = draw(maybe), draw(maybe)
        tasks = [with_({"name": "a", "replicas": r1, "template": tmpl(spec_a)}),
                 with_({"name": "b", "replicas": r2, "template": tmpl(spec_b)})]
        return "batch.volcano.sh", "Job", {"spec": {"tasks": tasks}}, [
            (1 if r1 is None else r1, spec_a), (1 if r2 is None else r2, spec_b)]
    if kind == "LeaderWorkerSet":
        r, size, leader = draw(maybe), draw(maybe), draw(st.booleans())
        groups, n = 1 if r is None else r, 1 if size is None else size
        lwt = with_({"size": size, "workerTemplate": tmpl(spec_b),
                     "leaderTemplate": tmpl(spec_a) if leader else None})
        o = {"spec": with_({"replicas": r, "leaderWorkerTemplate": lwt})}
        if leader:
            return "leaderworkerset.x-k8s.io", kind, o, [(groups, spec_a),
                                                         (groups * max(n - 1, 0), spec_b)]
        return "leaderworkerset.x-k8s.io", kind, o, [(groups * n, spec_b)]
    if kind == "RayCluster":
        auto = draw(st.booleans())
        r, lo, hi, hosts = draw(maybe), draw(maybe), draw(maybe), draw(st.one_of(st.none(),
                                                                                 st.integers(1, 4)))
        group = with_({"groupName": "g", "replicas": r, "minReplicas": lo, "maxReplicas": hi,
                       "numOfHosts": hosts, "template": tmpl(spec_b)})
        o = {"spec": {"enableInTreeAutoscaling": auto, "headGroupSpec": {"template": tmpl(spec_a)},
                      "workerGroupSpecs": [group]}}
        n = max(r or 0, lo or 0)
        if auto:
            n = max(n, MAX_REPLICAS if hi is None else hi)
        return "ray.io", kind, o, [(1, spec_a), (n * (hosts or 1), spec_b)]
    if kind == "TrainJob":
        nodes = draw(maybe)
        per_node = spec_a["containers"][0].get("resources", {})
        o = {"spec": {"trainer": with_({"numNodes": nodes, "resourcesPerNode": per_node})}}
        return "trainer.kubeflow.org", kind, o, [
            (1 if nodes is None else nodes, {"containers": [{"resources": per_node}]})]
    # A kind without an adapter: a made-up "fleet" of groups of jobs.
    r, p = draw(counts), draw(counts)
    o = {"spec": {"groups": [{"replicas": r, "jobTemplate": {"spec": {
        "parallelism": p, "template": tmpl(spec_a)}}}]}}
    return "example.com", "Fleet", o, [(r * p, spec_a)]


@PROPERTIES
@given(workloads())
def test_workload_total_is_the_sum_of_count_times_per_pod(case):
    group, kind, o, expected = case
    workload = read_workload(o, group, kind, MATCH)
    want = sum(pods * sum(kubernetes_pod_gpus(spec).values()) for pods, spec in expected)
    assert workload.gpus == want
    assert workload.gpus == sum(ps.count * ps.gpus_each for ps in workload.pod_sets)
    assert [ps.count for ps in workload.pod_sets if ps.gpus] == [
        pods for pods, spec in expected if pods and kubernetes_pod_gpus(spec)]
    assert workload.pods == sum(pods for pods, _ in expected)


# ================================================================== arbitrary input

KEYS = st.sampled_from([
    "spec", "template", "containers", "initContainers", "resources", "limits", "requests",
    "nvidia.com/gpu", "amd.com/gpu", "replicas", "parallelism", "completions", "maxReplicas",
    "minReplicas", "numOfHosts", "size", "numNodes", "trainer", "resourcesPerNode",
    "pytorchReplicaSpecs", "Worker", "elasticPolicy", "replicatedJobs", "workerGroupSpecs",
    "headGroupSpec", "enableInTreeAutoscaling", "rayClusterSpec", "submitterPodTemplate",
    "tasks", "leaderWorkerTemplate", "leaderTemplate", "workerTemplate", "jobTemplate",
    "restartPolicy", "metadata", "name", "namespace", "a/b", "~",
]) | st.text(max_size=4)

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 20)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)
           | st.sampled_from(["8", "1k", "8000m", "0.5", "-1", "Always", "1e999999999"]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40,
)
KINDS = st.sampled_from([*ADAPTERS, ("example.com", "Thing"), ("apps", "DaemonSet")])


def check_read(o: JSONish, group: str, kind: str) -> None:
    """read_workload either returns a sane Workload or refuses with a RequestError."""
    try:
        workload = read_workload(o, group, kind, MATCH)
    except RequestError:
        return
    assert isinstance(workload, Workload)
    assert 0 <= workload.gpus <= MAX_GPUS
    assert isinstance(workload.describe_gpus(), str)
    for ps in workload.pod_sets:
        assert isinstance(ps.count, int) and ps.count >= 0
        assert all(isinstance(n, int) and n > 0 for n in ps.gpus_per_pod.values())
        if ps.gpus_each and ps.template_path is not None:
            # GPUs were found in the spec of the template there, so the path must lead to it.
            node = resolve(o, ps.template_path)
            assert isinstance(node, dict) and isinstance(node.get("spec"), dict), ps.template_path


@PROPERTIES
@given(KINDS, JSON_VALUES)
def test_arbitrary_json_never_raises_anything_but_request_errors(group_kind_, value):
    check_read(value, *group_kind_)


@PROPERTIES
@given(KINDS, st.dictionaries(KEYS, JSON_VALUES, max_size=4), JSON_VALUES)
def test_arbitrary_specs_never_raise_anything_but_request_errors(group_kind_, top, spec):
    check_read({**top, "spec": spec}, *group_kind_)


def pointers(node: JSONish, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += pointers(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += pointers(v, (*path, i))
    return out


FIXTURE_OBJECTS = {name: load_any(name) for name in CORE_FILES + CRD_FILES}


@PROPERTIES
@given(st.sampled_from(sorted(FIXTURE_OBJECTS)), st.data())
def test_fixtures_with_a_random_part_replaced_never_raise_anything_else(name, data):
    o = copy.deepcopy(FIXTURE_OBJECTS[name])
    where = data.draw(st.sampled_from(pointers(o)[1:]))
    replacement = data.draw(JSON_VALUES)
    node = o
    for token in where[:-1]:
        node = node[token]
    node[where[-1]] = replacement
    check_read(o, *group_kind(FIXTURE_OBJECTS[name]))
