"""The OpenAPI document of /api/v1, written by hand."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}

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
