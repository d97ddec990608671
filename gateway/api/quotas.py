"""/api/v1/quotas: GPU quotas per role, team and user, changed at run time (docs/admin.md).

`manage` at scope `team` lets a lead set their own teams' quotas, at `any` every quota.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.admission.overrides import QUOTA, check_quota, over_quota, quota_view, split_target
from gateway.admission.ports import SettingChange
from gateway.api.admin_common import REASON, endpoint, may_manage, op, refreshed, stored
from gateway.api.context import ApiContext, actor, error, json_body, json_object, text_field
from gateway.runtime import RuntimeSettings
from gateway.store.base import Store

_GPUS = {"type": ["integer", "null"], "minimum": 0}


def quota_routes(ctx: ApiContext) -> list[BaseRoute]:
    """/quotas and /quotas/{target}, for the /api/v1 mount."""

    async def held(store: Store) -> tuple[dict[str, int], dict[str, int]]:
        """GPUs held now per user and per team."""
        return await run_in_threadpool(lambda: (store.gpus_by_user(), store.gpus_by_team()))

    def used(identity: Identity, target: str, users: Mapping[str, int], teams: Mapping[str, int]) -> int | None:
        """GPUs `target` holds now, where the caller may read it (as GET /usage scopes it); None
        for roles (the ledger counts per user and team) and where they may not."""
        scope, _, name = target.partition(":")
        if scope == "user" and ctx.may(identity, "audit-read", name, ""):
            return users.get(name, 0)
        if scope == "team" and ctx.may(identity, "audit-read", "", name):
            return teams.get(name, 0)
        return None

    async def list_quotas(_: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        await refreshed(runtime)
        policy = ctx.policy()
        _bindings, quotas = await stored(store)
        users_held, teams_held = await held(store)
        teams = sorted(set(policy.team_caps) | {t.partition(":")[2] for t in quotas if t.startswith("team:")})
        users = sorted(set(policy.user_caps))
        items = [{"target": t, "quota": quota_view(policy, t), "used": used(identity, t, users_held, teams_held),
                  "source": "runtime" if t in quotas else "bundle"}
                 for t in (*(f"role:{r}" for r in policy.role_order), *(f"team:{t}" for t in teams),
                           *(f"user:{u}" for u in users))]
        return json_body({"items": items, "default_team_max_concurrent_gpus": policy.default_team_cap})

    async def get_quota(request: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        target = request.path_params["target"]
        split_target(target)
        await refreshed(runtime)
        _bindings, quotas = await stored(store)
        users_held, teams_held = await held(store)
        return json_body({"target": target, "quota": quota_view(ctx.policy(), target),
                          "used": used(identity, target, users_held, teams_held),
                          "override": quotas.get(target), "source": "runtime" if target in quotas else "bundle"})

    async def set_quota(request: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        target = request.path_params["target"]
        scope, _, name = target.partition(":")
        if not may_manage(ctx, identity, name if scope == "team" else ""):
            return error(403, "forbidden", f"{identity.describe()} may not change the quota of {target}")
        split_target(target)
        fields = await json_object(request)
        reason = text_field(fields, "reason")
        if request.method == "DELETE":
            setting = SettingChange(QUOTA, target, None, reason)
        else:
            values = check_quota(ctx.policy(), target, {k: v for k, v in fields.items() if k != "reason"})
            _bindings, quotas = await stored(store)
            setting = SettingChange(QUOTA, target, {**quotas.get(target, {}), **values}, reason)
        done = await run_in_threadpool(lambda: store.put_setting(setting, actor(identity), now=time.time()))
        await refreshed(runtime)
        users_held, teams_held = await held(store)
        roles = await run_in_threadpool(store.owner_roles) if scope in ("user", "role") else {}
        return json_body({**done, "warnings": over_quota(ctx.policy(), target, users_held, teams_held, roles)})

    return [
        Route("/quotas", endpoint(ctx, list_quotas), methods=["GET"]),
        Route("/quotas/{target}", endpoint(ctx, get_quota), methods=["GET"]),
        Route("/quotas/{target}", endpoint(ctx, set_quota), methods=["PUT", "DELETE"]),
    ]


#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
QUOTA_PATHS: dict[str, Any] = {
    "/quotas": {"get": op("Quotas in force per role, team and user, each with `used`: the GPUs held now where "
                           "the caller may read them (as GET /usage scopes them), else null", "quotasList",
                           "401 503")},
    "/quotas/{target}": {
        "get": op("The quota in force for user:NAME, team:NAME or role:NAME, with `used` (as in the list)",
                   "quotaGet", "400 401 503", params=("target",)),
        "put": op("Set a quota (manage at team for one's own team, else at any); null is unlimited. `warnings` "
                   "says when the new cap is below the GPUs held now, and what that means", "quotaSet",
                   "400 401 403 503", params=("target",), body={
                       "type": "object", "required": ["reason"], "properties": {
                           "max_concurrent_gpus": _GPUS, "max_gpus_per_workload": _GPUS, **REASON}}),
        "delete": op("Remove a run-time quota: the bundle's is in force again (`warnings` as for PUT)",
                      "quotaUnset", "400 401 403 503",
                      params=("target",), body={"type": "object", "required": ["reason"], "properties": REASON}),
    },
}
