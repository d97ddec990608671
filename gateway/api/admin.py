"""/api/v1/roles, /api/v1/quotas and /api/v1/policy: run-time settings (docs/admin.md).

Role bindings and quotas changed here are stored, audited with the old and new value, and in
force on every replica within about a second (gateway.runtime). Anyone signed in may read
them; `manage` at scope `team` lets a lead set their own teams' quotas, at `any` everything
else. Replacing the policy is validated and diffed first, and by default needs a second
admin's approval of exactly that proposal (limits.yaml `second_person.policy_change`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.context import ApiContext, BadRequest, actor, error, json_body, json_object, text_field
from gateway.core.approvals import POLICY_CHANGE
from gateway.core.identity import Identity
from gateway.core.impact import QUEUED, RUNNING, Held
from gateway.core.impact import would_deny as impact_of
from gateway.core.overrides import (
    BINDING,
    QUOTA,
    SettingError,
    check_binding,
    check_quota,
    check_subject,
    over_quota,
    quota_view,
    split_target,
)
from gateway.core.overrides import apply as apply_overrides
from gateway.core.policy import Policy
from gateway.errors import ConfigError, GatewayError
from gateway.policy_bundle import REPLACEABLE_FILES, load_replacement, read_bundle
from gateway.runtime import RuntimeSettings, overrides_of
from gateway.store.base import Store
from gateway.store.settings import ApprovalRequired, SettingChange

Handler = Callable[[Request, Identity, Store, RuntimeSettings], Awaitable[Response]]


def proposal_digest(texts: Mapping[str, str]) -> str:
    """Names one proposed policy: the approval of a policy change is bound to it."""
    canonical = json.dumps({n: texts[n] for n in REPLACEABLE_FILES}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def policy_diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A unified diff of the replaceable files, as `git diff` would show it."""
    out: list[str] = []
    for name in REPLACEABLE_FILES:
        out.extend(difflib.unified_diff(old[name].splitlines(keepends=True), new[name].splitlines(keepends=True),
                                        fromfile=f"a/{name}", tofile=f"b/{name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _proposal(body: Mapping[str, Any]) -> dict[str, str]:
    files = body.get("files")
    if not isinstance(files, Mapping):
        raise BadRequest(f"files must be an object holding {' and '.join(REPLACEABLE_FILES)}")
    out = {}
    for name in REPLACEABLE_FILES:
        text = files.get(name)
        if not isinstance(text, str):
            raise BadRequest(f"files.{name} must be the file's text")
        out[name] = text
    return out


async def _refreshed(runtime: RuntimeSettings) -> None:
    """Read the settings now (a store read: off the event loop, as every store call here)."""
    await run_in_threadpool(runtime.refresh, time.time(), force=True)


def admin_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The run-time settings endpoints, for the /api/v1 mount."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            identity = await ctx.identity(request)
            if isinstance(identity, Response):
                return identity
            if ctx.store is None or ctx.runtime is None:
                return error(503, "unavailable", "the gateway has no store")
            try:
                return await handler(request, identity, ctx.store, ctx.runtime)
            except (BadRequest, SettingError) as exc:
                return error(400, "bad_request", str(exc))
            except GatewayError as exc:
                return error(503, "unavailable", str(exc))
        return run

    def may_manage(identity: Identity, team: str = "") -> bool:
        policy = ctx.policy()
        if policy.may(identity.role, "manage", "any"):
            return True
        return bool(team) and team in identity.teams and policy.may(identity.role, "manage", "team")

    async def stored(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
        overrides, _ = overrides_of(await run_in_threadpool(store.settings))
        return dict(overrides.bindings), dict(overrides.quotas)

    async def change(store: Store, runtime: RuntimeSettings, identity: Identity, setting: SettingChange) -> Response:
        done = await run_in_threadpool(lambda: store.put_setting(setting, actor(identity), now=time.time()))
        await _refreshed(runtime)
        return json_body(done)

    # ----------------------------------------------------------------- roles

    async def list_roles(_: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        await _refreshed(runtime)
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
        if not may_manage(identity):
            return error(403, "forbidden", f"{identity.describe()} may not change role bindings")
        subject = check_subject(request.path_params["subject"])
        fields = await json_object(request)
        reason = text_field(fields, "reason")
        if request.method == "DELETE":
            return await change(store, runtime, identity, SettingChange(BINDING, subject, None, reason))
        roles = check_binding(ctx.policy(), subject, fields.get("roles"))
        return await change(store, runtime, identity, SettingChange(BINDING, subject, list(roles), reason))

    # ----------------------------------------------------------------- quotas

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
        await _refreshed(runtime)
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
        await _refreshed(runtime)
        _bindings, quotas = await stored(store)
        users_held, teams_held = await held(store)
        return json_body({"target": target, "quota": quota_view(ctx.policy(), target),
                          "used": used(identity, target, users_held, teams_held),
                          "override": quotas.get(target), "source": "runtime" if target in quotas else "bundle"})

    async def set_quota(request: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        target = request.path_params["target"]
        scope, _, name = target.partition(":")
        if not may_manage(identity, name if scope == "team" else ""):
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
        await _refreshed(runtime)
        users_held, teams_held = await held(store)
        roles = await run_in_threadpool(store.owner_roles) if scope in ("user", "role") else {}
        return json_body({**done, "warnings": over_quota(ctx.policy(), target, users_held, teams_held, roles)})

    # ----------------------------------------------------------------- policy

    def current(runtime: RuntimeSettings) -> dict[str, str]:
        files = read_bundle(runtime.holder.directory)
        replaced = runtime.holder.replaced
        return {**files, **replaced} if replaced else files

    async def get_policy(_: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        await _refreshed(runtime)
        texts = current(runtime)
        return json_body({"version": ctx.policy().version, "digest": proposal_digest(texts),
                          "source": "api" if runtime.holder.replaced else "files", "files": texts})

    def review(runtime: RuntimeSettings, proposed: Mapping[str, str],
               impact: Callable[[Policy], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Validate and diff a proposal; with `impact`, also what it says of the proposed policy
        (with the run-time role bindings and quotas over it, as it would be in force)."""
        texts = current(runtime)
        try:
            policy = load_replacement(runtime.holder.directory, proposed)
        except ConfigError as exc:
            return {"valid": False, "error": str(exc), "digest": proposal_digest(proposed)}
        checked: dict[str, Any] = {"valid": True, "error": None, "digest": proposal_digest(proposed),
                                   "diff": policy_diff(texts, proposed),
                                   "needs_approval": ctx.policy().second_person.policy_change}
        if impact is not None:
            overrides, _ = overrides_of(runtime.store.settings())
            checked["would_deny"] = impact(apply_overrides(policy, overrides))
        return checked

    def would_deny(identity: Identity, store: Store) -> Callable[[Policy], list[dict[str, Any]]]:
        """The running and queued workloads a proposed policy would have denied, of those the
        caller may read (as the audit: their own, their team's with audit-read at team, all at any)."""
        def impact(proposed: Policy) -> list[dict[str, Any]]:
            held = [Held(RUNNING, r.resource, r.namespace, r.name, r.owner, r.team, r.role, r.gpus)
                    for r in store.reservations() if r.charged and r.owner]
            held += [Held(QUEUED, q["resource"], q["namespace"], q["name"], q["owner"], q["team"], q["role"],
                          int(q["gpus"])) for q in store.queue_rows() if q["owner"]]
            return [{"state": r.workload.state, "resource": r.workload.resource, "namespace": r.workload.namespace,
                     "name": r.workload.name, "owner": r.workload.owner, "team": r.workload.team,
                     "role": r.workload.role, "gpus": r.workload.gpus, "rule": r.rule, "reason": r.reason}
                    for r in impact_of(proposed, held)
                    if ctx.may(identity, "audit-read", r.workload.owner, r.workload.team)]
        return impact

    async def diff_policy(request: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        proposed = _proposal(await json_object(request))
        return json_body(await run_in_threadpool(review, runtime, proposed, would_deny(identity, store)))

    async def replace_policy(request: Request, identity: Identity, store: Store,
                             runtime: RuntimeSettings) -> Response:
        if not may_manage(identity):
            return error(403, "forbidden", f"{identity.describe()} may not change the policy")
        body = await json_object(request)
        reason = text_field(body, "reason")
        revert = request.method == "DELETE"
        proposed = read_bundle(runtime.holder.directory) if revert else _proposal(body)
        checked = await run_in_threadpool(review, runtime, proposed)
        if not checked["valid"]:
            return error(400, "invalid_policy", checked["error"])
        digest = checked["digest"]
        approval = (identity.user, POLICY_CHANGE, "", digest) if checked["needs_approval"] else None
        setting = SettingChange("policy", "bundle", None if revert else proposed, reason, approval)
        try:
            done = await run_in_threadpool(lambda: store.put_setting(setting, actor(identity), now=time.time()))
        except ApprovalRequired:
            return error(403, "second_person",
                         f"a policy change needs a second admin's approval of proposal {digest}: request it "
                         f"(`gpuctl policy request --digest {digest} --reason ...`), have another admin approve "
                         "it, then send the same change again")
        await _refreshed(runtime)
        return json_body({**done, "new": None, "digest": digest, "diff": checked["diff"],
                          "version": ctx.policy().version})

    return [
        Route("/roles", endpoint(list_roles), methods=["GET"]),
        Route("/roles/bindings/{subject}", endpoint(bind), methods=["PUT", "DELETE"]),
        Route("/quotas", endpoint(list_quotas), methods=["GET"]),
        Route("/quotas/{target}", endpoint(get_quota), methods=["GET"]),
        Route("/quotas/{target}", endpoint(set_quota), methods=["PUT", "DELETE"]),
        Route("/policy", endpoint(get_policy), methods=["GET"]),
        Route("/policy", endpoint(replace_policy), methods=["PUT", "DELETE"]),
        Route("/policy/diff", endpoint(diff_policy), methods=["POST"]),
    ]


def _op(summary: str, op_id: str, codes: str, *, body: Mapping[str, Any] | None = None,
        params: tuple[str, ...] = ()) -> dict[str, Any]:
    text = {"400": "The body or a parameter is invalid (`reason` says how)", "401": "The token is missing or invalid",
            "403": "The caller may not do this, or a second person must approve it first",
            "503": "Authentication or the store is unavailable"}
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    op: dict[str, Any] = {
        "summary": summary, "operationId": op_id,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{c: {"description": text[c], "content": error_body} for c in codes.split()}},
    }
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_REASON = {"reason": {"type": "string", "minLength": 1, "description": "Why; recorded in the audit log"}}
_FILES: dict[str, Any] = {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "object", "required": list(REPLACEABLE_FILES),
              "properties": {n: {"type": "string"} for n in REPLACEABLE_FILES}}}}
_GPUS = {"type": ["integer", "null"], "minimum": 0}

#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
ADMIN_PATHS: dict[str, Any] = {
    "/roles": {"get": _op("Roles with their permissions, and every role binding (bundle or run-time)",
                          "rolesList", "401 503")},
    "/roles/bindings/{subject}": {
        "put": _op("Bind group:NAME or user:NAME to roles (manage at any)", "roleBind", "400 401 403 503",
                   params=("subject",), body={"type": "object", "required": ["roles", "reason"], "properties": {
                       "roles": {"type": "array", "items": {"type": "string"}}, **_REASON}}),
        "delete": _op("Remove a run-time binding: the bundle's binding is in force again", "roleUnbind",
                      "400 401 403 503", params=("subject",),
                      body={"type": "object", "required": ["reason"], "properties": _REASON}),
    },
    "/quotas": {"get": _op("Quotas in force per role, team and user, each with `used`: the GPUs held now where "
                           "the caller may read them (as GET /usage scopes them), else null", "quotasList",
                           "401 503")},
    "/quotas/{target}": {
        "get": _op("The quota in force for user:NAME, team:NAME or role:NAME, with `used` (as in the list)",
                   "quotaGet", "400 401 503", params=("target",)),
        "put": _op("Set a quota (manage at team for one's own team, else at any); null is unlimited. `warnings` "
                   "says when the new cap is below the GPUs held now, and what that means", "quotaSet",
                   "400 401 403 503", params=("target",), body={
                       "type": "object", "required": ["reason"], "properties": {
                           "max_concurrent_gpus": _GPUS, "max_gpus_per_workload": _GPUS, **_REASON}}),
        "delete": _op("Remove a run-time quota: the bundle's is in force again (`warnings` as for PUT)",
                      "quotaUnset", "400 401 403 503",
                      params=("target",), body={"type": "object", "required": ["reason"], "properties": _REASON}),
    },
    "/policy": {
        "get": _op("The policy in force: its files, version, digest and source (files or api)", "policyGet",
                   "401 503"),
        "put": _op("Replace policy.csv and limits.yaml (manage at any; a second admin's approval of the "
                   "proposal's digest by default)", "policyReplace", "400 401 403 503",
                   body={**_FILES, "required": ["files", "reason"], "properties": {**_FILES["properties"], **_REASON}}),
        "delete": _op("Go back to the files' policy (a policy change too)", "policyRevert", "400 401 403 503",
                      body={"type": "object", "required": ["reason"], "properties": _REASON}),
    },
    "/policy/diff": {"post": _op("Validate a proposed policy and show its diff and digest, and in `would_deny` "
                                 "the running and queued workloads (of those the caller may read) whose launch it "
                                 "would have denied: state, resource, namespace, name, owner, team, role, gpus, "
                                 "rule, reason", "policyDiff", "400 401 503", body=_FILES)},
}
