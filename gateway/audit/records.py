"""The audit record of an admission: what the request says (known before the store decides)
and what the decision says, joined in the store's transaction. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.admission.decision import Decision
from gateway.admission.review import AdmissionRequest
from gateway.audit.history import Digest, changes
from gateway.errors import RequestError

#: How an admission decided under a break-glass grant begins its audit reason.
BREAK_GLASS_MARK = "[break-glass grant "


@dataclass(slots=True)
class RequestRecord:
    """What an admission's audit record says that does not depend on its decision. What the
    request changed is worked out only for a decision that is audited. Treat as immutable (not
    `frozen`, which costs several times as much to build, once per request)."""

    request: AdmissionRequest
    role: str
    kind: str
    """The kind as records name it (`PyTorchJob`, or the resource of a `/scale`)."""
    name: str
    policy_version: str
    digest: Digest
    """Hashes ConfigMap and Secret values in `changes` (gateway.audit.history)."""
    grant: str = ""
    """The break-glass grant the request was decided under, or ""."""


def admission_record(record: RequestRecord, decision: Decision) -> dict[str, Any]:
    """The audit fields of the admission `record` decided as `decision`."""
    req = record.request
    reason = f"{BREAK_GLASS_MARK}{record.grant}] {decision.reason}" if record.grant else decision.reason
    return {
        "request_uid": req.uid,
        "user": req.username,
        "groups": json.dumps(list(req.groups)),
        "role": record.role,
        "action": decision.action.value if decision.action else "",
        "kind": record.kind,
        "namespace": req.namespace,
        "name": record.name,
        "object_uid": _object_uid(req),
        "gpus": decision.gpus,
        "decision": decision.verdict,
        "mode": decision.mode.value,
        "rule": decision.rule,
        "reason": reason,
        "policy_version": record.policy_version,
        "owner": decision.owner,
        "team": decision.team,
        "changes": _changes(req, record.digest),
    }


def is_break_glass(row: Mapping[str, Any]) -> bool:
    """An audit record of a grant (created, expired, revoked) or of an admission under one."""
    return row.get("action") == "grant" or str(row.get("reason", "")).startswith(BREAK_GLASS_MARK)


def _object_uid(req: AdmissionRequest) -> str:
    for obj in (req.obj, req.old_obj):
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if isinstance(meta, Mapping) and isinstance(meta.get("uid"), str) and meta["uid"]:
            return str(meta["uid"])
    return ""


def _changes(req: AdmissionRequest, digest: Digest) -> str:
    """JSON of what an UPDATE (or a /scale) changed in the object; "[]" for other requests."""
    if req.operation != "UPDATE" or req.sub_resource not in ("", "scale"):
        return "[]"
    try:
        found = changes(req.kind.group, req.kind.kind, req.old_obj, req.obj, digest=digest)
    except RequestError:
        found = []  # the object is unreadable: denied and audited as such, without a diff
    return orjson.dumps(found, option=orjson.OPT_SORT_KEYS).decode()
