"""The OpenAPI document of /api/v1, written by hand."""

from __future__ import annotations

from typing import Any

from gateway.api.approvals import APPROVAL_PATHS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _refusals(*codes: str) -> dict[str, Any]:
    text = {"400": "A query parameter or the body cannot be read", "401": "The token is missing or invalid",
            "403": "The caller's role may not do this", "503": "Authentication or the store is unavailable"}
    return {c: {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


_AUDIT_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
    for n, d in (("user", "requester"), ("action", "launch, modify, kill, exec"), ("decision", "allowed or denied"),
                 ("kind", "kind or resource"), ("namespace", "namespace"), ("name", "object name"),
                 ("since", "epoch seconds, ISO 8601 or an age like 7d"), ("until", "same forms"),
                 ("limit", "the newest N records"))
]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gpu-gateway admin API", "version": "1"},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/whoami": {
            "get": {
                "summary": "The identity a bearer token names, resolved to a role like a Kubernetes identity",
                "operationId": "whoami",
                "responses": {
                    "200": {"description": "The token is valid",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WhoAmI"}}}},
                    "401": {"description": "The token is missing or invalid; `reason` says why",
                            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": _ERROR}}},
                    "503": {"description": "Authentication is not configured, or the issuer is unreachable",
                            "content": {"application/json": {"schema": _ERROR}}},
                },
            },
        },
        "/audit": {"get": {
            "summary": "Audit records the caller may read (their own; their team's or all by audit-read)",
            "operationId": "auditList", "parameters": _AUDIT_PARAMS,
            "responses": {"200": {"description": "Records, oldest first", "content": {"application/json": {
                "schema": {"type": "object",
                           "properties": {"items": {"type": "array", "items": {"type": "object"}}}}}}},
                **_refusals("400", "401", "503")},
        }},
        "/audit/export": {"get": {
            "summary": "The same records as JSON lines", "operationId": "auditExport", "parameters": _AUDIT_PARAMS,
            "responses": {"200": {"description": "JSON lines", "content": {"application/x-ndjson": {}}},
                          **_refusals("400", "401", "503")},
        }},
        "/audit/verify": {"get": {
            "summary": "Walk the audit hash chain (audit-read on any)", "operationId": "auditVerify",
            "responses": {"200": {"description": "The verdict", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ok": {"type": "boolean"}, "records": {"type": "integer"},
                                                 "first_bad": {"type": ["integer", "null"]},
                                                 "problem": {"type": "string"}}}}}},
                **_refusals("401", "403", "503")},
        }},
        "/usage": {"get": {
            "summary": "GPUs reserved now per user and per team, and with `since` the GPU-hours held per "
                       "user, team and role (the caller's, their team's, or all)",
            "operationId": "usage",
            "parameters": [p for p in _AUDIT_PARAMS if p["name"] in ("since", "until")],
            "responses": {"200": {"description": "Usage", "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "users": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "teams": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}},
                **_refusals("401", "503")},
        }},
        "/check": {"post": {
            "summary": "What-if: decide manifests for a user with the policy in force, touching no ledger "
                       "(as oneself; as another user with audit-read on any)",
            "operationId": "check",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["user", "manifest"], "properties": {
                    "user": {"type": "string"},
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "manifest": {"description": "an object, a list of objects, or a YAML/JSON string",
                                 "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}},
                                           {"type": "string"}]},
                    "action": {"type": "string", "enum": ["launch", "modify", "kill", "exec"], "default": "launch"},
                    "owner": {"type": "string"}, "owner_team": {"type": "string"},
                    "namespace": {"type": "string"}}}}}},
            "responses": {"200": {"description": "One result per object, as `gpu-gateway check -o json` prints",
                                  "content": {"application/json": {"schema": {
                                      "type": "object", "properties": {
                                          "results": {"type": "array", "items": {"type": "object"}}}}}}},
                          **_refusals("400", "401", "403", "503")},
        }},
        **APPROVAL_PATHS,
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {
            "WhoAmI": {
                "type": "object",
                "required": ["username", "groups", "role", "teams"],
                "properties": {
                    "username": {"type": "string"},
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "role": {"type": ["string", "null"], "description": "null: no role"},
                    "teams": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error", "reason"],
                "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
