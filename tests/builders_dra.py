"""DRA objects as users write them: `resource.k8s.io/v1` ResourceClaims and ResourceClaimTemplates
(Kubernetes 1.34), each checked against the API's schema strictly when built, and pod specs
that name them."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

KUBERNETES = "1.34.0"


def validated(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj`, once the Kubernetes 1.34 schema accepts it (strict: no unknown fields)."""
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    return obj


def exactly(device_class: str = "gpu.nvidia.com", count: int | None = None, *, mode: str | None = None,
            name: str = "gpus") -> dict[str, Any]:
    """A v1 DeviceRequest for exactly `count` devices (or all of them) of one class."""
    request: dict[str, Any] = {"deviceClassName": device_class}
    if mode is not None:
        request["allocationMode"] = mode
    if count is not None:
        request["count"] = count
    return {"name": name, "exactly": request}


def first_available(*alternatives: tuple[str, int], name: str = "gpus") -> dict[str, Any]:
    """A v1 DeviceRequest the scheduler satisfies with the first alternative that fits."""
    return {"name": name, "firstAvailable": [
        {"name": f"alt{i}", "deviceClassName": cls, "count": count} for i, (cls, count) in enumerate(alternatives)]}


def claim_spec(*requests: dict[str, Any]) -> dict[str, Any]:
    return {"devices": {"requests": [copy.deepcopy(r) for r in requests]}}


def claim_template(name: str, *requests: dict[str, Any], namespace: str = "research") -> dict[str, Any]:
    return validated({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                      "metadata": {"name": name, "namespace": namespace},
                      "spec": {"spec": claim_spec(*requests)}})


def claim(name: str, *requests: dict[str, Any], namespace: str = "research") -> dict[str, Any]:
    return validated({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                      "metadata": {"name": name, "namespace": namespace}, "spec": claim_spec(*requests)})


def gpu_template(name: str, gpus: int = 4, device_class: str = "gpu.nvidia.com") -> dict[str, Any]:
    return claim_template(name, exactly(device_class, gpus))


def naming(spec: dict[str, Any], *, templates: tuple[str, ...] = (), claims: tuple[str, ...] = ()) -> dict[str, Any]:
    """`spec` (a PodSpec) with `spec.resourceClaims` naming the templates and claims, and its
    first container using them (`resources.claims`)."""
    entries = [{"name": f"t{i}", "resourceClaimTemplateName": t} for i, t in enumerate(templates)]
    entries += [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)]
    spec["resourceClaims"] = entries
    resources = spec["containers"][0].setdefault("resources", {})
    resources["claims"] = [{"name": e["name"]} for e in entries]
    return spec
