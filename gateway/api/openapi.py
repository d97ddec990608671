"""The OpenAPI document of /api/v1, written by hand."""

from __future__ import annotations

from typing import Any

from gateway.api.admin import ADMIN_PATHS
from gateway.api.approvals import APPROVAL_PATHS
from gateway.api.schemas import SCHEMAS, complete, json_content, ref
from gateway.api.workloads import WORKLOAD_PATHS, WORKLOAD_SCHEMAS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _refusals(*codes: str) -> dict[str, Any]:
    text = {"400": "A query parameter or the body cannot be read", "401": "The token is missing or invalid",
            "403": "The caller's role may not do this", "503": "Authentication or the store is unavailable"}
    return {c: {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


_AUDIT_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
    for n, d in (("user", "requester"), ("action", "launch, modify, kill, exec"), ("decision", "allowed or denied"),
                 ("kind", "kind or resource"), ("namespace", "namespace"), ("name", "object name"),
                 ("since", "epoch seconds, ISO 8601 or an age like 7d"), ("until", "same forms"))
] + [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "the newest N records"},
    {"name": "after", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
     "description": "only records after this sequence number (`seq`): a cursor to follow the log"},
]

_CHECK_EXAMPLE = {"user": "alice", "groups": ["gpu-interns", "team:vision"], "manifest": {
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "big-run", "namespace": "research"},
    "spec": {"parallelism": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "train", "image": "ghcr.io/lab/train:1", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}}}

OPENAPI: dict[str, Any] = complete({
    "openapi": "3.1.0",
    "info": {"title": "gpu-gateway admin API", "version": "1"},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/openapi.json": {"get": {
            "summary": "This document (no token needed)", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": json_content({"type": "object"})}},
        }},
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
            "responses": {"200": {"description": "Records, oldest first", "content": json_content(ref("AuditList"))},
                          **_refusals("400", "401", "503")},
        }},
        "/audit/export": {"get": {
            "summary": "The same records as JSON lines", "operationId": "auditExport", "parameters": _AUDIT_PARAMS,
            "responses": {"200": {"description": "JSON lines, one AuditRecord each",
                                  "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                          **_refusals("400", "401", "503")},
        }},
        "/audit/verify": {"get": {
            "summary": "Walk the audit hash chain (audit-read on any)", "operationId": "auditVerify",
            "responses": {"200": {"description": "The verdict", "content": json_content(ref("AuditVerify"))},
                          **_refusals("401", "403", "503")},
        }},
        "/usage": {"get": {
            "summary": "GPUs reserved now per user and per team, and with `since` the GPU-hours held per "
                       "user, team and role (the caller's, their team's, or all)",
            "operationId": "usage",
            "parameters": [p for p in _AUDIT_PARAMS if p["name"] in ("since", "until")] + [
                {"name": "format", "in": "query", "required": False, "schema": {"type": "string",
                                                                                 "enum": ["json", "csv"]},
                 "description": "csv: text/csv rows by,name,gpus_now,gpu_hours,since,until (also with "
                                "`Accept: text/csv`)"},
                {"name": "by", "in": "query", "required": False, "schema": {"type": "string",
                                                                             "enum": ["user", "team", "role"]},
                 "description": "CSV rows of this breakdown only"},
            ],
            "responses": {"200": {"description": "Usage", "content": {
                **json_content(ref("Usage")), "text/csv": {"schema": {"type": "string"}}}},
                **_refusals("400", "401", "503")},
        }},
        "/telemetry": {"post": {
            "summary": "GPU samples from a node agent (role with `report`); stored with the alerts they raise "
                       "(docs/agent.md). Also takes the agents' projected service-account tokens when the "
                       "gateway runs with --agent-token-issuer",
            "operationId": "reportTelemetry",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["node", "samples"], "properties": {
                    "node": {"type": "string"}, "samples": {"type": "array", "items": {"type": "object"}}}}}}},
            "responses": {"200": {"description": "Samples stored (duplicates skipped) and alerts raised",
                                  "content": {"application/json": {"schema": {"type": "object", "properties": {
                                      "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
                                      "alerts": {"type": "array", "items": {
                                          "type": "object", "description": "kind, node, gpu, reason, ts (epoch "
                                          "seconds), time (RFC 3339, UTC), pod, owner, workload"}}}}}}},
                          **_refusals("400", "401", "403", "503")},
        }},
        "/check": {"post": {
            "summary": "What-if: decide manifests for a user with the policy in force against the GPUs in use "
                       "now, writing nothing (as oneself; as another user with audit-read on any)",
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
                    "namespace": {"type": "string"}}}, "example": _CHECK_EXAMPLE}}},
            "responses": {"200": {"description": "One result per object, as `gpu-gateway check -o json` prints",
                                  "content": json_content(ref("CheckResults"))},
                          **_refusals("400", "401", "403", "503")},
        }},
        **APPROVAL_PATHS,
        **ADMIN_PATHS,
        **WORKLOAD_PATHS,
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {**SCHEMAS, **WORKLOAD_SCHEMAS},
    },
})
