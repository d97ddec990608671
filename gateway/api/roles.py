"""/api/v1/roles: the roles with their permissions, and role bindings changed at run time (docs/admin.md).

Binding a group or a user needs `manage` at scope `any`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.admission.overrides import BINDING, check_binding, check_subject
from gateway.admission.ports import SettingChange
from gateway.api.admin_common import REASON, change, endpoint, may_manage, op, refreshed, stored
from gateway.api.context import ApiContext, error, json_body, json_object, text_field
from gateway.runtime import RuntimeSettings
from gateway.store.base import Store


def role_routes(ctx: ApiContext) -> list[BaseRoute]:
    """/roles and /roles/bindings/{subject}, for the /api/v1 mount."""

    async def list_roles(_: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        await refreshed(runtime)
        policy, bundle = ctx.policy(), runtime.holder.bundle
        bindings, _quotas = await stored(store)
        subjects = sorted(set(bundle.bindings) | set(bindings))
        return json_body({
            "roles": [{"name": role,
                       "permissions": sorted([a, s] for r, a, s in policy.permissions if r == role)}
                      for role in policy.role_order],
            "bindings": [{"subject": s, "roles": sorted(policy.bindings.get(s, ()), key=policy.role_order.index),
                          "source": "runtime" if s in bindings else "bundle"} for s in subjects],
        })

    async def bind(request: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        if not may_manage(ctx, identity):
            return error(403, "forbidden", f"{identity.describe()} may not change role bindings")
        subject = check_subject(request.path_params["subject"])
        fields = await json_object(request)
        reason = text_field(fields, "reason")
        if request.method == "DELETE":
            return await change(store, runtime, identity, SettingChange(BINDING, subject, None, reason))
        roles = check_binding(ctx.policy(), subject, fields.get("roles"))
        return await change(store, runtime, identity, SettingChange(BINDING, subject, list(roles), reason))

    return [
        Route("/roles", endpoint(ctx, list_roles), methods=["GET"]),
        Route("/roles/bindings/{subject}", endpoint(ctx, bind), methods=["PUT", "DELETE"]),
    ]


#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
ROLE_PATHS: dict[str, Any] = {
    "/roles": {"get": op("Roles with their permissions, and every role binding (bundle or run-time)",
                          "rolesList", "401 503")},
    "/roles/bindings/{subject}": {
        "put": op("Bind group:NAME or user:NAME to roles (manage at any)", "roleBind", "400 401 403 503",
                   params=("subject",), body={"type": "object", "required": ["roles", "reason"], "properties": {
                       "roles": {"type": "array", "items": {"type": "string"}}, **REASON}}),
        "delete": op("Remove a run-time binding: the bundle's binding is in force again", "roleUnbind",
                      "400 401 403 503", params=("subject",),
                      body={"type": "object", "required": ["reason"], "properties": REASON}),
    },
}
