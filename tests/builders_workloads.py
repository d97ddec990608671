"""Fixtures and builders for the workload-recognition tests.

    pod_spec([ctr(2), ctr(1, "amd.com/gpu")], init=[ctr(4), ctr(1, sidecar=True)])
    load_crd("pytorchjob.yaml"), load_core("job-parallel.json")
    assert_templates_resolve(obj, workload)
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gateway.admission.kinds import KindRegistry
from gateway.admission.workloads import GpuMatcher, Workload, read_workload

FIXTURES = Path(__file__).resolve().parent / "fixtures"
POLICIES = Path(__file__).resolve().parents[1] / "policies"
CORE = FIXTURES / "core"
CRDS = FIXTURES / "crds"
CORE_FILES = sorted(p.name for p in CORE.glob("*.json"))
CRD_FILES = sorted(p.name for p in CRDS.glob("*.yaml"))

IMAGE = "ghcr.io/lab/train:1"


@cache
def _load(path: Path) -> Any:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name} should hold exactly one object"
    return docs[0]


def load_core(name: str) -> dict[str, Any]:
    """A kubectl-generated core object (a fresh copy: tests may edit it)."""
    return copy.deepcopy(_load(CORE / name))


def load_crd(name: str) -> dict[str, Any]:
    return copy.deepcopy(_load(CRDS / name))


def load_any(name: str) -> dict[str, Any]:
    return load_core(name) if name.endswith(".json") else load_crd(name)


def group_kind(obj: dict[str, Any]) -> tuple[str, str]:
    group, _, _version = str(obj["apiVersion"]).rpartition("/")
    return group, str(obj["kind"])


@cache
def shipped_kinds() -> KindRegistry:
    """The workload kinds the default policy bundle registers (policies/limits.yaml)."""
    from gateway.policy_bundle import load_bundle

    return load_bundle(POLICIES).kinds


def read(obj: dict[str, Any], matcher: GpuMatcher | None = None) -> Workload:
    """read_workload with the group and kind the object itself names, and the shipped registry."""
    group, kind = group_kind(obj)
    return read_workload(obj, group, kind, matcher or GpuMatcher(), kinds=shipped_kinds())


# ------------------------------------------------------------------ JSON pointers


def resolve(obj: Any, pointer: str) -> Any:
    """RFC 6901: "" is the whole document; tokens unescape ~1 to / and ~0 to ~."""
    if pointer == "":
        return obj
    assert pointer.startswith("/"), pointer
    node = obj
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            assert token.isdigit() and (token == "0" or not token.startswith("0")), pointer
            node = node[int(token)]
        else:
            assert isinstance(node, dict), f"{pointer}: {token} is under a non-container"
            node = node[token]
    return node


def is_pod_template(node: Any) -> bool:
    """A PodTemplateSpec (or a Pod): an object whose spec has a containers list."""
    return (
        isinstance(node, dict)
        and isinstance(node.get("spec"), dict)
        and isinstance(node["spec"].get("containers"), list)
    )


def assert_templates_resolve(obj: dict[str, Any], workload: Workload) -> None:
    """Every pod set's template path names a real pod template inside `obj`."""
    for ps in workload.pod_sets:
        if ps.template_path is None:
            continue
        node = resolve(obj, ps.template_path)
        assert is_pod_template(node), f"{ps.name}: {ps.template_path!r} is not a pod template"


# ------------------------------------------------------------------ builders


def ctr(
    gpus: int | str | None = None,
    resource: str = "nvidia.com/gpu",
    *,
    requests: int | str | None = None,
    name: str = "main",
    sidecar: bool = False,
    extra: dict[str, int | str] | None = None,
) -> dict[str, Any]:
    """A container with `gpus` as a limit and/or `requests` as a request of `resource`;
    `extra` adds more limits (other resources)."""
    c: dict[str, Any] = {"name": name, "image": IMAGE}
    resources: dict[str, dict[str, int | str]] = {}
    if gpus is not None:
        resources.setdefault("limits", {})[resource] = gpus
    if requests is not None:
        resources.setdefault("requests", {})[resource] = requests
    for key, value in (extra or {}).items():
        resources.setdefault("limits", {})[key] = value
    if resources:
        c["resources"] = resources
    if sidecar:
        c["restartPolicy"] = "Always"
    return c


def pod_spec(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init is not None:
        spec["initContainers"] = init
    return spec


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "research"},
            "spec": pod_spec(containers, init)}


def template(gpus: int | str | None = 1, resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec([ctr(gpus, resource)])}


def obj(api_version: str, kind: str, spec: Any, name: str = "w") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": "research"}, "spec": spec}
