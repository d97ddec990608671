"""/api/v1/policy: the policy in force, and replacing it at run time (docs/admin.md).

Replacing the policy needs `manage` at scope `any`; it is validated and diffed first, and by
default needs a second admin's approval of exactly that proposal (limits.yaml
`second_person.policy_change`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.approvals import POLICY_CHANGE
from gateway.admission.identity import Identity
from gateway.admission.impact import QUEUED, RUNNING, Held
from gateway.admission.impact import would_deny as impact_of
from gateway.admission.overrides import apply as apply_overrides
from gateway.admission.policy import Policy
from gateway.admission.ports import SettingChange
from gateway.api.admin_common import REASON, endpoint, may_manage, op, refreshed
from gateway.api.context import ApiContext, BadRequest, actor, error, json_body, json_object, text_field
from gateway.errors import ConfigError
from gateway.policy_bundle import REPLACEABLE_FILES, load_replacement, read_bundle
from gateway.runtime import RuntimeSettings, overrides_of
from gateway.store.base import Store
from gateway.store.settings import ApprovalRequired


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


def policy_routes(ctx: ApiContext) -> list[BaseRoute]:
    """/policy and /policy/diff, for the /api/v1 mount."""

    def current(runtime: RuntimeSettings) -> dict[str, str]:
        files = read_bundle(runtime.holder.directory)
        replaced = runtime.holder.replaced
        return {**files, **replaced} if replaced else files

    async def get_policy(_: Request, identity: Identity, store: Store, runtime: RuntimeSettings) -> Response:
        await refreshed(runtime)
        texts = current(runtime)
        return json_body({"version": ctx.policy().version, "digest": proposal_digest(texts),
                          "source": "api" if runtime.holder.replaced else "files", "files": texts})

    def review(runtime: RuntimeSettings, proposed: Mapping[str, str],
               impact: Callable[[Policy], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Validate and diff a proposal; with `impact`, also what it says of the proposed policy
        (with the run-time role bindings and quotas over it, as it would be in force)."""
        texts = current(runtime)
        try:
            policy = load_replacement(runtime.holder.directory, proposed).policy
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
        if not may_manage(ctx, identity):
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
        await refreshed(runtime)
        return json_body({**done, "new": None, "digest": digest, "diff": checked["diff"],
                          "version": ctx.policy().version})

    return [
        Route("/policy", endpoint(ctx, get_policy), methods=["GET"]),
        Route("/policy", endpoint(ctx, replace_policy), methods=["PUT", "DELETE"]),
        Route("/policy/diff", endpoint(ctx, diff_policy), methods=["POST"]),
    ]


_FILES: dict[str, Any] = {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "object", "required": list(REPLACEABLE_FILES),
              "properties": {n: {"type": "string"} for n in REPLACEABLE_FILES}}}}

#: The OpenAPI paths of these endpoints (gateway/api/openapi.py adds them to the document).
POLICY_PATHS: dict[str, Any] = {
    "/policy": {
        "get": op("The policy in force: its files, version, digest and source (files or api)", "policyGet",
                   "401 503"),
        "put": op("Replace policy.csv and limits.yaml (manage at any; a second admin's approval of the "
                   "proposal's digest by default)", "policyReplace", "400 401 403 503",
                   body={**_FILES, "required": ["files", "reason"], "properties": {**_FILES["properties"], **REASON}}),
        "delete": op("Go back to the files' policy (a policy change too)", "policyRevert", "400 401 403 503",
                      body={"type": "object", "required": ["reason"], "properties": REASON}),
    },
    "/policy/diff": {"post": op("Validate a proposed policy and show its diff and digest, and in `would_deny` "
                                 "the running and queued workloads (of those the caller may read) whose launch it "
                                 "would have denied: state, resource, namespace, name, owner, team, role, gpus, "
                                 "rule, reason", "policyDiff", "400 401 503", body=_FILES)},

}
