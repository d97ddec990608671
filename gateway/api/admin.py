"""The run-time settings endpoints, one module per resource (docs/admin.md): /roles
(gateway.api.roles), /quotas (gateway.api.quotas) and /policy (gateway.api.policy)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from gateway.api.context import ApiContext
from gateway.api.policy import POLICY_PATHS, policy_routes
from gateway.api.quotas import QUOTA_PATHS, quota_routes
from gateway.api.roles import ROLE_PATHS, role_routes


def admin_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The run-time settings endpoints, for the /api/v1 mount."""
    return [*role_routes(ctx), *quota_routes(ctx), *policy_routes(ctx)]


#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
ADMIN_PATHS: dict[str, Any] = {**ROLE_PATHS, **QUOTA_PATHS, **POLICY_PATHS}
