"""Realistic AdmissionReview bodies, as the API server sends them.

Objects carry what a real apply leaves on them (labels, the kubectl last-applied
annotation, managedFields, env, volumes), so a GPU launch body is a few KB, not a
hand-trimmed stub. Two consumers:

* `HTTP_MIX`: templates with ``{{var}}`` placeholders that the wrk Lua script fills per
  request (unique uids and object names), in a fixed 20-request schedule of a workload
  lifecycle: researchers launch PyTorchJobs (admitted and reserved), the training operator
  creates their pods (recorded, uncharged), owners exec into them, an intern's exec is
  denied, the operator deletes pods and owners delete jobs (released), interns launch
  8,000-GPU jobs (denied), and ConfigMaps and CPU-only pods pass through.
* `launch_stream`: the all-launch stream, every request a distinct researcher's 8-GPU launch
  (admitted and charged), the same way (templates filled per request by the wrk script).
* `launch_burst`: the bodies of a launch's burst: a lead's 4,096-GPU PyTorchJob, then the
  training operator's creates of its 4,096 one-GPU pods (`benchmarks.burst` sends them).
* `decision_cases`: concrete bodies plus ledger facts for the in-process decision benchmark.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
OPERATOR = "system:serviceaccount:kubeflow:training-operator"
OPERATOR_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kubeflow", "system:authenticated"]
NAMESPACE = "research"

_RESOURCES = {
    ("", "Pod"): "pods", ("", "ConfigMap"): "configmaps", ("batch", "Job"): "jobs",
    ("apps", "Deployment"): "deployments", ("kubeflow.org", "PyTorchJob"): "pytorchjobs",
}


# --------------------------------------------------------------------------- objects


def _meta(name: str, namespace: str, kind: str, *, labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None, manager: str = "kubectl-client-side-apply",
          api_version: str = "v1") -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "resourceVersion": "48213377",
        "generation": 1,
        "creationTimestamp": "2025-05-14T09:21:07Z",
        "labels": labels or {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llm-training"},
        "annotations": annotations or {},
        "managedFields": [{
            "manager": manager, "operation": "Update", "apiVersion": api_version,
            "time": "2025-05-14T09:21:07Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}, "f:labels": {".": {}}},
                         "f:spec": {".": {}}},
        }],
    }


def _container(name: str, gpus: int) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "16", "memory": "200Gi"},
                                 "limits": {"cpu": "32", "memory": "240Gi"}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    return {
        "name": name,
        "image": "ghcr.io/lab/train:2025.05.1",
        "imagePullPolicy": "IfNotPresent",
        "command": ["torchrun"],
        "args": ["--nnodes=4", "--nproc-per-node=8", "train.py", "--config", "configs/llm-70b.yaml"],
        "env": [{"name": k, "value": v} for k, v in (
            ("NCCL_DEBUG", "WARN"), ("NCCL_IB_DISABLE", "0"), ("NCCL_SOCKET_IFNAME", "eth0"),
            ("OMP_NUM_THREADS", "8"), ("WANDB_PROJECT", "llm-70b"), ("HF_HOME", "/cache/hf"),
            ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"), ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
        )],
        "resources": resources,
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True},
                         {"name": "cache", "mountPath": "/cache"}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _pod_spec(gpus: int, container_name: str = "pytorch") -> dict[str, Any]:
    return {
        "restartPolicy": "OnFailure",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "trainer",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "containers": [_container(container_name, gpus)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
            {"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
        ],
    }


def pytorchjob(name: str, *, workers: int = 3, gpus: int = 8, namespace: str = NAMESPACE,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Kubeflow PyTorchJob: 1 master + `workers` workers, `gpus` GPUs each."""

    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(gpus)}}

    spec = {"runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}}
    obj = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": spec}
    applied = orjson.dumps({**obj, "metadata": {"name": name, "namespace": namespace}}).decode()
    ann = {"kubectl.kubernetes.io/last-applied-configuration": applied, **(annotations or {})}
    obj["metadata"] = _meta(name, namespace, "PyTorchJob", annotations=ann, api_version="kubeflow.org/v1")
    return obj


def job(name: str, *, parallelism: int = 2, gpus: int = 8, namespace: str = NAMESPACE) -> dict[str, Any]:
    spec = {"parallelism": parallelism, "completions": parallelism, "backoffLimit": 2,
            "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(gpus, "main")}}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _meta(name, namespace, "Job", api_version="batch/v1"), "spec": spec}


def deployment(name: str, *, replicas: int = 2, gpus: int = 1, namespace: str = NAMESPACE) -> dict[str, Any]:
    # No surge: a GPU serving Deployment rolls one pod at a time rather than asking for more GPUs.
    spec = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(gpus, "serve")}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(name, namespace, "Deployment", api_version="apps/v1"), "spec": spec}


def pod(name: str, *, gpus: int = 8, namespace: str = NAMESPACE, owner: str = "", team: str = "",
        job_name: str = "") -> dict[str, Any]:
    """A pod; with `owner`, as a controller creates it: owner-stamped, with an ownerReference."""
    ann = {}
    if owner:
        ann["gpu-gateway.io/owner"] = owner
        if team:
            ann["gpu-gateway.io/team"] = team
    # The training operator's labels are on the pods it makes; a person's pod may not carry them.
    labels = {"training.kubeflow.org/job-name": job_name, "training.kubeflow.org/replica-type": "worker",
              "training.kubeflow.org/replica-index": "0"} if job_name else {"app": name}
    meta = _meta(name, namespace, "Pod", labels=labels, annotations=ann,
                 manager="training-operator" if job_name else "kubectl-run")
    if job_name:
        meta["ownerReferences"] = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job_name,
                                    "uid": f"uid-{job_name}", "controller": True,
                                    "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": _pod_spec(gpus)}


def configmap(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    data = {"train.yaml": "model: llama-70b\nlr: 1.5e-4\nwarmup_steps: 2000\nbatch_size: 1024\n" * 4,
            "LOG_LEVEL": "info"}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(name, namespace, "ConfigMap"), "data": data}


# --------------------------------------------------------------------------- reviews


def review(obj: dict[str, Any] | None, *, user: str, groups: list[str], operation: str = "CREATE",
           uid: str = "uid-1", old: dict[str, Any] | None = None, sub_resource: str = "",
           namespace: str | None = None, name: str | None = None,
           kind: tuple[str, str, str] | None = None, resource: str | None = None) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview for `obj` (or `old` for a DELETE)."""
    src = obj if obj is not None else (old or {})
    group, _, version = str(src.get("apiVersion", "v1")).rpartition("/")
    gvk = kind or (group, version, str(src.get("kind", "Pod")))
    res = resource or _RESOURCES.get((gvk[0], gvk[2]), gvk[2].lower() + "s")
    meta = src.get("metadata", {})
    req: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": gvk[0], "version": gvk[1], "kind": gvk[2]},
        "resource": {"group": gvk[0], "version": gvk[1], "resource": res},
        "requestKind": {"group": gvk[0], "version": gvk[1], "kind": gvk[2]},
        "requestResource": {"group": gvk[0], "version": gvk[1], "resource": res},
        "name": name if name is not None else meta.get("name", ""),
        "namespace": namespace if namespace is not None else meta.get("namespace", NAMESPACE),
        "operation": operation,
        "userInfo": {"username": user, "uid": f"uid-of-{user}", "groups": groups},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        req["subResource"] = sub_resource
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": req}


def exec_review(pod_name: str, *, user: str, groups: list[str], uid: str = "uid-1") -> dict[str, Any]:
    opts = {"apiVersion": "v1", "kind": "PodExecOptions", "stdin": True, "stdout": True, "tty": True,
            "container": "pytorch", "command": ["bash"]}
    return review(opts, user=user, groups=groups, operation="CONNECT", uid=uid, sub_resource="exec",
                  namespace=NAMESPACE, name=pod_name, kind=("", "v1", "PodExecOptions"), resource="pods")


def researcher_groups(team: str) -> list[str]:
    return ["gpu-researchers", f"team:{team}", "system:authenticated"]


def intern_groups(team: str) -> list[str]:
    return ["gpu-interns", f"team:{team}", "system:authenticated"]


# --------------------------------------------------------------------------- the HTTP mix

#: One cycle of the HTTP mix: (kind, index within the kind). Objects move through stages
#: `MIX_LAG` cycles apart (launch -> pod created -> exec -> pod deleted -> job deleted), so
#: with fewer connections than `MIX_LAG` x 20 - 20 requests in flight each step reaches the
#: gateway after the one before it.
MIX_SCHEDULE: tuple[tuple[str, int], ...] = (
    ("launch", 0), ("configmap", 0), ("cpupod", 0), ("podcreate", 0), ("exec", 0),
    ("cpupod", 1), ("poddelete", 0), ("delete", 0), ("configmap", 1), ("intern", 0),
    ("launch", 1), ("cpudelete", 0), ("cpupod", 2), ("podcreate", 1), ("execdeny", 0),
    ("configmap", 2), ("poddelete", 1), ("cpupod", 3), ("delete", 1), ("cpudelete", 1),
)
MIX_LAG = 5
MIX_RESEARCHERS = 100
MIX_INTERNS = 50
MIX_TEAMS = 20


@dataclass(frozen=True)
class MixKind:
    kind: str
    description: str
    expect: str
    """What the gateway should answer: `allowed` or `denied`."""
    template: str
    """AdmissionReview JSON with {{uid}}, {{name}}, {{user}}, {{team}}, {{owner}}, {{job}}."""


def _template(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def http_mix() -> list[MixKind]:
    """The request kinds of the HTTP mix, with placeholder templates."""
    rg = researcher_groups("{{team}}")
    ig = intern_groups("{{team}}")
    launch = pytorchjob("{{name}}", workers=3, gpus=8)
    big = pytorchjob("{{name}}", workers=999, gpus=8)
    worker = pod("{{name}}", gpus=8, owner="{{owner}}", team="{{team}}", job_name="{{job}}")
    cpu_pod = pod("{{name}}", gpus=0)
    return [
        MixKind("launch", "researcher launches a 32-GPU PyTorchJob (admitted, reserved)", "allowed",
                _template(review(launch, user="{{user}}", groups=rg, uid="{{uid}}"))),
        MixKind("podcreate", "training operator creates an owner-stamped 8-GPU pod (recorded)", "allowed",
                _template(review(worker, user=OPERATOR, groups=OPERATOR_GROUPS, uid="{{uid}}"))),
        MixKind("exec", "owner execs into their job's pod (allowed, audited)", "allowed",
                _template(exec_review("{{name}}", user="{{user}}", groups=rg, uid="{{uid}}"))),
        MixKind("execdeny", "intern execs into a researcher's pod (denied: ownership)", "denied",
                _template(exec_review("{{name}}", user="{{user}}", groups=ig, uid="{{uid}}"))),
        MixKind("poddelete", "training operator deletes a pod (released)", "allowed",
                _template(review(None, old=worker, user=OPERATOR, groups=OPERATOR_GROUPS,
                                 operation="DELETE", uid="{{uid}}"))),
        MixKind("delete", "owner deletes their PyTorchJob (released)", "allowed",
                _template(review(None, old=launch, user="{{user}}", groups=rg, operation="DELETE",
                                 uid="{{uid}}"))),
        MixKind("intern", "intern launches an 8,000-GPU PyTorchJob (denied: workload-gpu-limit)", "denied",
                _template(review(big, user="{{user}}", groups=ig, uid="{{uid}}"))),
        MixKind("configmap", "ConfigMap create (not a GPU workload: passes)", "allowed",
                _template(review(configmap("{{name}}"), user="{{user}}", groups=rg, uid="{{uid}}"))),
        MixKind("cpupod", "CPU-only pod create (no GPUs: passes)", "allowed",
                _template(review(cpu_pod, user="{{user}}", groups=rg, uid="{{uid}}"))),
        MixKind("cpudelete", "CPU-only pod delete (no GPUs: passes after a ledger read)", "allowed",
                _template(review(None, old=cpu_pod, user="{{user}}", groups=rg, operation="DELETE",
                                 uid="{{uid}}"))),
    ]


_STAGES = {"launch": 0, "podcreate": 1, "exec": 2, "poddelete": 3, "delete": 4}


def _researcher(n: int) -> tuple[str, str]:
    n %= MIX_RESEARCHERS
    return f"r{n}", f"t{n % MIX_TEAMS}"


def _intern(n: int) -> tuple[str, str]:
    n %= MIX_INTERNS
    return f"i{n}", f"t{n % MIX_TEAMS}"


def mix_request(i: int, tag: str) -> tuple[str, dict[str, str]]:
    """Kind and placeholder values of request `i` of the mix (what wrk.lua.in computes)."""
    c = i // len(MIX_SCHEDULE)
    kind, k = MIX_SCHEDULE[i % len(MIX_SCHEDULE)]
    v = {"uid": f"{tag}-{kind}-{i}"}
    if kind in _STAGES:
        jc = c - _STAGES[kind] * MIX_LAG
        owner, team = _researcher(jc * 3 + k)
        job = f"{tag}j{jc}x{k}"
        v.update(job=job, owner=owner, user=owner, team=team,
                 name=job if kind in ("launch", "delete") else f"{job}-worker-0")
    elif kind == "execdeny":
        v["user"], v["team"] = _intern(c)
        v["name"] = f"{tag}j{c - 2 * MIX_LAG}x1-worker-0"
    elif kind == "intern":
        v["user"], v["team"] = _intern(c * 2 + k)
        v["name"] = f"{tag}big{c}x{k}"
    elif kind == "cpudelete":
        v["user"], v["team"] = _researcher((c - MIX_LAG) * 4 + k)
        v["name"] = f"{tag}cpupod{c - MIX_LAG}x{k}"
    else:
        v["user"], v["team"] = _researcher(c * 4 + k)
        v["name"] = f"{tag}{kind}{c}x{k}"
    return kind, v


def _fill(template: str, values: dict[str, str]) -> bytes:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template.encode()


def mix_bodies(count: int, tag: str) -> list[bytes]:
    """The first `count` request bodies of the mix, as wrk sends them."""
    return stream_bodies(stream("mix"), count, tag)


def mix_shares() -> dict[str, float]:
    counts: dict[str, int] = {}
    for kind, _ in MIX_SCHEDULE:
        counts[kind] = counts.get(kind, 0) + 1
    return {k: n / len(MIX_SCHEDULE) for k, n in counts.items()}


# --------------------------------------------------------------------------- the all-launch stream

#: The all-launch stream, alternately a PyTorchJob (one 8-GPU master) and a Job (one 8-GPU
#: pod), each by a researcher of its own, admitted and charged (no cap binds: a researcher may
#: hold 1,024 GPUs, the shipped teams are uncapped).
LAUNCH_SCHEDULE: tuple[tuple[str, int], ...] = (("ptjob", 0), ("batchjob", 0))
LAUNCH_GPUS = 8


def launch_stream() -> list[MixKind]:
    """The request kinds of the all-launch stream, with placeholder templates."""
    rg = researcher_groups("{{team}}")
    ptjob = pytorchjob("{{name}}", workers=0, gpus=LAUNCH_GPUS)
    batchjob = job("{{name}}", parallelism=1, gpus=LAUNCH_GPUS)
    return [
        MixKind("ptjob", f"a new researcher launches a PyTorchJob: one {LAUNCH_GPUS}-GPU master (admitted, charged)",
                "allowed", _template(review(ptjob, user="{{user}}", groups=rg, uid="{{uid}}"))),
        MixKind("batchjob", f"a new researcher launches a Job: one {LAUNCH_GPUS}-GPU pod (admitted, charged)",
                "allowed", _template(review(batchjob, user="{{user}}", groups=rg, uid="{{uid}}"))),
    ]


def launch_people(tag: str) -> str:
    """What the names of the all-launch stream's people start with, in a run tagged `tag`."""
    return f"{tag}-u"


def launch_user(tag: str, i: int) -> str:
    """The person launching request `i` of the all-launch stream tagged `tag` (one per request)."""
    return f"{launch_people(tag)}{i}"


def launch_request(i: int, tag: str) -> tuple[str, dict[str, str]]:
    """Kind and placeholder values of request `i` of the all-launch stream (as wrk.lua.in computes)."""
    kind = LAUNCH_SCHEDULE[i % len(LAUNCH_SCHEDULE)][0]
    return kind, {"uid": f"{tag}-{kind}-{i}", "user": launch_user(tag, i), "team": f"t{i % MIX_TEAMS}",
                  "name": f"{tag}{kind}{i}"}


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Stream:
    """A request stream the wrk script sends: its kinds, schedule and per-request values."""

    name: str
    """`mix` or `launch` (the wrk script's branch)."""
    kinds: tuple[MixKind, ...]
    schedule: tuple[tuple[str, int], ...]
    request: Callable[[int, str], tuple[str, dict[str, str]]]
    early: int
    """Leading requests whose verdicts are not checked (they meet objects not created yet)."""
    max_connections: int | None
    """Most requests in flight that keep the stream's order meaningful; None: any."""


def stream(name: str) -> Stream:
    """The stream `name`: `mix` (the workload lifecycle mix) or `launch` (all-launch)."""
    if name == "mix":
        return Stream("mix", tuple(http_mix()), MIX_SCHEDULE, mix_request, 5 * MIX_LAG * len(MIX_SCHEDULE),
                      (MIX_LAG - 1) * len(MIX_SCHEDULE))
    if name == "launch":
        return Stream("launch", tuple(launch_stream()), LAUNCH_SCHEDULE, launch_request, 0, None)
    raise ValueError(f"unknown stream {name!r} (mix or launch)")


def stream_bodies(s: Stream, count: int, tag: str) -> list[bytes]:
    """The first `count` request bodies of stream `s`, as wrk sends them."""
    templates = {m.kind: m.template for m in s.kinds}
    out = []
    for i in range(count):
        kind, values = s.request(i, tag)
        out.append(_fill(templates[kind], values))
    return out


# --------------------------------------------------------------------------- a launch's burst


@dataclass(frozen=True)
class Burst:
    """A lead's PyTorchJob of `len(pods)` one-GPU pods and the training operator's creates of them."""

    lead: str
    team: str
    job_name: str
    job_uid: str
    gpus: int
    job: bytes
    """The lead's CREATE of the PyTorchJob (AdmissionReview JSON)."""
    pods: list[bytes]
    """The operator's CREATE of each pod, with a controller ownerReference carrying the job's UID."""


#: Pods of a launch's burst: one gang the size of the largest launch a lead may make alone.
BURST_PODS = 4096


def launch_burst(tag: str, pods: int = BURST_PODS) -> Burst:
    """One master and `pods` - 1 workers of one GPU each: `pods` GPUs, within a lead's
    max_gpus_per_workload (4,096) and the second-person threshold (more than 4,096)."""
    if pods < 1:
        raise ValueError("a burst has at least one pod")
    lead, team, name = f"{tag}-lead", "t0", f"{tag}burst"
    groups = ["gpu-leads", f"team:{team}", "system:authenticated"]
    obj = pytorchjob(name, workers=pods - 1, gpus=1)
    job_body = orjson.dumps(review(obj, user=lead, groups=groups, uid=f"{tag}-launch-0"))
    child = pod("{{name}}", gpus=1, owner=lead, team=team, job_name=name)
    child["metadata"]["labels"].update({"training.kubeflow.org/replica-type": "{{type}}",
                                        "training.kubeflow.org/replica-index": "{{index}}"})
    template = _template(review(child, user=OPERATOR, groups=OPERATOR_GROUPS, uid="{{uid}}"))
    bodies = []
    for i in range(pods):
        kind, index = ("master", 0) if i == 0 else ("worker", i - 1)
        bodies.append(_fill(template, {"uid": f"{tag}-podcreate-{i}", "name": f"{name}-{kind}-{index}",
                                       "type": kind, "index": str(index)}))
    return Burst(lead=lead, team=team, job_name=name, job_uid=obj["metadata"]["uid"], gpus=pods,
                 job=job_body, pods=bodies)


# --------------------------------------------------------------------------- in-process cases


@dataclass(frozen=True)
class DecisionCase:
    body: dict[str, Any]
    raw: bytes
    """The same body as JSON bytes (for the variant that includes decoding)."""
    target: tuple[str, str, str, int] | None
    """(owner, team, role, gpus) of the ledger's record of the target, if any."""
    usage: tuple[int, int]
    """GPUs the owner and their team hold already."""


def decision_cases(n: int, *, users: list[tuple[str, str]], seed: int = 7) -> list[DecisionCase]:
    """`n` varied requests by `users` ((name, team) pairs bound in the bundle by `user:` lines,
    members of the Kubernetes groups `team:TEAM` and `TEAM-gpu-users`).

    Bodies share object structure but each has its own uid, name and requester, so caches
    keyed by identity see the bundle's variety. The mix: launches of PyTorchJobs, Jobs,
    Deployments and pods (some over limits), deletes and execs on recorded targets (own
    and someone else's), and ConfigMaps passing through.
    """
    rnd = random.Random(seed)
    protos = {
        "pytorchjob": pytorchjob("proto", workers=3), "big": pytorchjob("proto", workers=999),
        "job": job("proto"), "deployment": deployment("proto"), "pod": pod("proto", gpus=4),
        "configmap": configmap("proto"),
    }
    out: list[DecisionCase] = []
    for i in range(n):
        user, team = users[rnd.randrange(len(users))]
        groups = [f"team:{team}", f"{team}-gpu-users", "system:authenticated"]
        uid = f"case-{i}"
        choice = rnd.random()
        target = None
        usage = (rnd.randrange(0, 64), rnd.randrange(0, 512))
        if choice < 0.55:
            kind = rnd.choice(("pytorchjob", "pytorchjob", "big", "job", "deployment", "pod"))
            obj = copy.deepcopy(protos[kind])
            obj["metadata"]["name"] = f"w-{i}"
            body = review(obj, user=user, groups=groups, uid=uid)
        elif choice < 0.75:
            obj = copy.deepcopy(protos["pytorchjob"])
            obj["metadata"]["name"] = f"w-{i}"
            owner, owner_team = (user, team) if rnd.random() < 0.7 else users[rnd.randrange(len(users))]
            target = (owner, owner_team, "researcher", 32)
            body = review(None, old=obj, user=user, groups=groups, operation="DELETE", uid=uid)
        elif choice < 0.9:
            owner, owner_team = (user, team) if rnd.random() < 0.7 else users[rnd.randrange(len(users))]
            target = (owner, owner_team, "researcher", 8)
            body = exec_review(f"w-{i}-worker-0", user=user, groups=groups, uid=uid)
        else:
            obj = copy.deepcopy(protos["configmap"])
            obj["metadata"]["name"] = f"cm-{i}"
            body = review(obj, user=user, groups=groups, uid=uid)
        out.append(DecisionCase(body=body, raw=orjson.dumps(body), target=target, usage=usage))
    return out
