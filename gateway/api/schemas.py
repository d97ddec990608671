"""Schemas of the admin API's bodies, and what every operation of its OpenAPI document shares.

Endpoint modules describe their own paths and point at these schemas by name
(`ref("Approval")`); `complete` gives every operation of the document the refusals that
authentication and the store can cause (401 with its `WWW-Authenticate` header, 503), and an
`Error` body to every error response that names none, so a new endpoint is described
accurately without repeating them.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _items(name: str) -> Schema:
    return {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": ref(name)}}}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STRINGS = {"type": "array", "items": _STR}
_COUNTS = {"type": "object", "additionalProperties": _INT}
_HOURS = {"type": "object", "additionalProperties": _NUM}
_CAPS = {"type": "object", "additionalProperties": {"type": ["integer", "null"]}}


def _object(required: str, **properties: Schema) -> Schema:
    """An object whose `required` (space-separated) properties are always there; others may be added later."""
    return {"type": "object", "required": required.split(), "properties": properties}


SCHEMAS: dict[str, Schema] = {
    "Error": _object("error reason", error={**_STR, "description": "a short code: invalid_token, forbidden, ..."},
                     reason={**_STR, "description": "what is wrong and what to do"}),
    "WhoAmI": _object("username groups role teams grants", username=_STR, groups=_STRINGS,
                      role={"type": ["string", "null"], "description": "null: no role"}, teams=_STRINGS,
                      grants={"type": "array", "description": "the caller's active break-glass grants",
                              "items": _object("id role expires_at reason granter in_force", id=_STR, role=_STR,
                                               expires_at={**_NUM, "description": "epoch seconds"}, reason=_STR,
                                               granter=_STR, in_force={"type": "boolean", "description":
                                                                       "whether `role` comes from it"})}),
    "AuditRecord": _object(
        "seq ts time request_uid user groups role action kind namespace name object_uid gpus decision mode rule "
        "reason dry_run policy_version owner team changes prev_hash hash",
        seq={**_INT, "description": "position in the hash chain, from 1"}, ts={**_NUM, "description": "epoch seconds"},
        time={"type": ["string", "null"], "format": "date-time",
              "description": "`ts` in RFC 3339, UTC, whole seconds (2026-12-02T10:00:00Z); not hashed. null only "
                             "for a `ts` no clock can show (an edited record)"},
        request_uid=_STR, user=_STR, groups=_STRINGS, role=_STR,
        action={**_STR, "description": "launch, modify, kill, exec, approval, grant, ..."},
        kind=_STR, namespace=_STR, name=_STR, object_uid=_STR, gpus=_INT,
        decision={"type": "string", "enum": ["allowed", "denied"]}, mode=_STR, rule=_STR, reason=_STR,
        dry_run={"type": "boolean"}, policy_version=_STR, owner=_STR, team=_STR,
        changes={"type": "array", "items": {"type": "object"}}, prev_hash=_STR, hash=_STR),
    "AuditList": _items("AuditRecord"),
    "AuditVerify": _object("ok records first_bad problem", ok={"type": "boolean"}, records=_INT,
                           first_bad={"type": ["integer", "null"]}, problem=_STR),
    "Usage": _object(
        "users teams limits", users={**_COUNTS, "description": "GPUs reserved now per user"},
        teams={**_COUNTS, "description": "GPUs reserved now per team"},
        limits={**_object("users teams", users=_CAPS, teams=_CAPS),
                "description": "the concurrent cap of each user and team shown (null: unlimited)"},
        gpu_hours={**_object("since until users teams roles", since=_NUM, until=_NUM, users=_HOURS, teams=_HOURS,
                             roles=_HOURS), "description": "with `since`: GPU-hours held in the period"}),
    "CheckResult": _object(
        "allowed decision action kind namespace name user role teams gpus gpus_detail charged_to rule mode reason "
        "warnings caps usage_read usage_note policy_version", allowed={"type": "boolean"}, decision=_STR,
        action=_STR, kind=_STR, namespace=_STR, name=_STR, user=_STR, role={"type": ["string", "null"]},
        teams=_STRINGS, gpus=_INT, gpus_detail=_STR,
        charged_to={"type": ["string", "null"], "description": "who the GPUs are charged to (the owner of the "
                    "workload they descend from); null when none are"},
        rule=_STR, mode=_STR, reason=_STR, warnings=_STRINGS,
        caps={"type": "array", "items": ref("CapFigure"), "description": "the GPU caps the request was held to"},
        usage_read={"type": "boolean", "description": "whether the GPUs in use were read from the store"},
        usage_note={**_STR, "description": "\"\" when usage was read, else `usage not read: <why>`"},
        policy_version=_STR),
    "CapFigure": _object(
        "rule subject limit used asked fits",
        rule={**_STR, "description": "workload-gpu-limit, user-quota or team-quota"},
        subject={**_STR, "description": "role NAME, user NAME (role R) or team NAME"},
        limit={"type": ["integer", "null"], "description": "null: unlimited"},
        used={"type": ["integer", "null"], "description": "GPUs in use now (less the workload's own); null for a "
              "per-workload limit or when usage was not read"},
        asked=_INT, fits={"type": "boolean"}),
    "CheckResults": _object("results", results={"type": "array", "items": ref("CheckResult")}),
    "Approval": _object(
        "id requester requester_teams action kind namespace name gpus reason state created_at expires_at",
        id=_STR, requester=_STR, requester_teams=_STRINGS, action=_STR, kind=_STR, namespace=_STR, name=_STR,
        gpus=_INT, reason=_STR,
        state={"type": "string", "enum": ["pending", "approved", "denied", "used", "expired"]},
        created_at=_NUM, expires_at=_NUM, reviewer=_STR, review_comment=_STR,
        reviewed_at={"type": ["number", "null"]}, used_at={"type": ["number", "null"]}, used_request_uid=_STR,
        target_owner={"type": ["string", "null"], "description": "for a modify, kill or exec: the owner the ledger "
                      "recorded for the workload when it was asked for (\"\": none); its reviewer needs rights over "
                      "them, and it lifts nothing once the workload belongs to someone else. null: not recorded"},
        target_team={"type": ["string", "null"], "description": "the workload's team then, likewise"},
        warnings={**_STRINGS, "description": "in the answer to an approve: the team caps the approved launch "
                  "would go past"}),
    "ApprovalList": _items("Approval"),
    "Grant": _object(
        "id user role reason granter state created_at expires_at", id=_STR, user=_STR, role=_STR, reason=_STR,
        granter=_STR, state={"type": "string", "enum": ["active", "revoked", "expired"]}, created_at=_NUM,
        expires_at=_NUM, ended_at={"type": ["number", "null"]}, ended_by=_STR),
    "GrantList": _items("Grant"),
}

#: Statuses that any authenticated operation may answer, whatever it does.
_COMMON = {
    "401": {"description": "The token is missing, expired or invalid; `reason` and `WWW-Authenticate` say why",
            "headers": {"WWW-Authenticate": {"schema": _STR, "description": "Bearer realm=..., error=invalid_token"}},
            "content": json_content(ref("Error"))},
    "503": {"description": "Authentication is not configured, the issuer is unreachable, or the store is down",
            "content": json_content(ref("Error"))},
}


def complete(document: Schema) -> Schema:
    """`document` with the shared refusals on every authenticated operation, and an `Error` body
    on every 4xx/5xx response that documents no body (a copy; the input is not changed)."""
    out = copy.deepcopy(document)
    out.setdefault("components", {}).setdefault("schemas", {}).update(
        {k: v for k, v in SCHEMAS.items() if k not in out["components"]["schemas"]})
    for path_item in out.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if operation.get("security", out.get("security")):
                for status, response in _COMMON.items():
                    responses.setdefault(status, copy.deepcopy(response))
                responses["401"].setdefault("headers", copy.deepcopy(_COMMON["401"]["headers"]))
            for status, response in responses.items():
                if status[:1] in ("4", "5") and "content" not in response:
                    response["content"] = json_content(ref("Error"))
    return out
