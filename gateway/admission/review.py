"""AdmissionReview → AdmissionRequest, and AdmissionRequest + Decision → response.

Only the fields gpu-gateway decides on are kept. Anything that does not look like an
AdmissionReview of a version in VERSIONS raises ReviewError: the caller answers with a deny.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.admission.pointer import is_object
from gateway.errors import ReviewError

OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

V1 = "admission.k8s.io/v1"
VERSIONS = (V1, "admission.k8s.io/v1beta1")
"""The AdmissionReview versions read. The request and response fields gpu-gateway uses are the
same in both; the API server requires the answer in the version it sent (webhook
configurations may still list v1beta1 first)."""


@dataclass(slots=True)
class GroupVersionKind:
    """Treat as immutable; not `frozen` for the reason given on AdmissionRequest."""

    group: str
    version: str
    kind: str


@dataclass(slots=True)
class AdmissionRequest:
    """The parts of `AdmissionReview.request` that decisions read.

    Treat as immutable. Not `frozen`: one is built per request, and a frozen dataclass's
    `__init__` (one `object.__setattr__` per field) costs several times a plain one.
    """

    uid: str
    kind: GroupVersionKind
    resource: str
    sub_resource: str
    namespace: str
    name: str
    operation: str
    username: str
    groups: tuple[str, ...]
    obj: Mapping[str, Any] | None = None
    old_obj: Mapping[str, Any] | None = None
    dry_run: bool = False
    resource_group: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] | None = None
    """The operation's options (DeleteOptions on a DELETE: propagationPolicy, ...)."""
    api_version: str = V1
    """The review's apiVersion, which its answer carries."""

    @property
    def resource_key(self) -> str:
        """`resource.group` (e.g. `pytorchjobs.kubeflow.org`, `pods`): the ledger's kind key."""
        return f"{self.resource}.{self.resource_group}" if self.resource_group else self.resource


def _str(mapping: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = mapping.get(key)
    if type(value) is str:  # the usual field
        return value
    if value is None:
        if required:
            raise ReviewError(f"request.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"request.{key} must be a string")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict and not is_object(value):
        raise ReviewError(f"request.{where} must be an object")
    return value


def parse_review(body: Any) -> AdmissionRequest:
    """Read a decoded AdmissionReview body; raise ReviewError with a clear message if it is not one."""
    if not is_object(body):
        raise ReviewError("body is not a JSON object")
    api_version = body.get("apiVersion")
    if api_version not in VERSIONS:
        raise ReviewError(f"apiVersion {api_version!r} is not supported; send one of {', '.join(VERSIONS)}")
    if body.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind {body.get('kind')!r} is not AdmissionReview")
    req = body.get("request")
    if not is_object(req):
        raise ReviewError("request is missing")
    uid = _str(req, "uid", required=True)
    if not uid:
        raise ReviewError("request.uid is empty")
    operation = _str(req, "operation", required=True)
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation {operation!r} is not one of {sorted(OPERATIONS)}")
    kind = req.get("kind")
    if not is_object(kind) or not isinstance(kind.get("kind"), str):
        raise ReviewError("request.kind is missing")
    resource = req.get("resource")
    if not is_object(resource) or not isinstance(resource.get("resource"), str):
        raise ReviewError("request.resource is missing")
    user = req.get("userInfo")
    if not is_object(user):
        raise ReviewError("request.userInfo is missing")
    username = _str(user, "username")
    groups_raw = user.get("groups") or []
    if not isinstance(groups_raw, list) or not all(isinstance(g, str) for g in groups_raw):
        raise ReviewError("request.userInfo.groups must be a list of strings")
    dry_run = req.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be a boolean")
    obj = _object(req.get("object"), "object")
    old_obj = _object(req.get("oldObject"), "oldObject")
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise ReviewError(f"request.object is missing for {operation}")
    extra = user.get("extra") or {}
    return AdmissionRequest(
        uid=uid,
        kind=GroupVersionKind(
            group=str(kind.get("group") or ""),
            version=str(kind.get("version") or ""),
            kind=kind["kind"],
        ),
        resource=resource["resource"],
        resource_group=str(resource.get("group") or ""),
        sub_resource=_str(req, "subResource"),
        namespace=_str(req, "namespace"),
        name=_str(req, "name"),
        operation=operation,
        username=username,
        groups=tuple(groups_raw),
        obj=obj,
        old_obj=old_obj,
        dry_run=dry_run,
        extra=extra if is_object(extra) else {},
        options=_object(req.get("options"), "options"),
        api_version=str(api_version),
    )


def review_uid(body: Any) -> str | None:
    """Best-effort request UID of a body that failed to parse, so the answer can still echo it."""
    if isinstance(body, Mapping):
        req = body.get("request")
        if isinstance(req, Mapping) and isinstance(req.get("uid"), str) and req["uid"]:
            return str(req["uid"])
    return None


def answer_version(body: Any) -> str:
    """The apiVersion to answer a body in, readable or not: its own where it is one of VERSIONS, else v1."""
    version = body.get("apiVersion") if isinstance(body, Mapping) else None
    return version if isinstance(version, str) and version in VERSIONS else V1


def review_response(
    uid: str,
    allowed: bool,
    *,
    message: str = "",
    code: int | None = None,
    warnings: tuple[str, ...] = (),
    patch: str | None = None,
    api_version: str = V1,
) -> dict[str, Any]:
    """An AdmissionReview response body in `api_version` (the request's; the fields are the same in
    every one of VERSIONS). `patch` is base64 of a JSONPatch document."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed or message:
        response["status"] = {
            "code": code if code is not None else (200 if allowed else 403),
            "message": message,
        }
        if not allowed:
            response["status"]["reason"] = "Forbidden"
    if warnings:
        response["warnings"] = list(warnings)
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = patch
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
