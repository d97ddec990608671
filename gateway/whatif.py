"""What-if: decide manifests for a user as the gateway would now, writing nothing.

Shared by `gpu-gateway check` (a file, a policy directory, optionally a store) and
`POST /api/v1/check` (a JSON body, the policy in force, the gateway's store): both turn their
input into documents and call `run_check`. With a store, each request is decided by the same
store job an admission runs (`AdmissionService`), through `Store.preview`: one read of the
ledger (usage, the target's record, GPU-hour budgets, approvals) and no write. Without one,
nothing is in use; every result says which it was (`usage_read`, `usage_note`) and the caps
it was held to (`caps`). Given `may_read` (the admin API's audit scope), a decision that read a
record of someone the caller may not read says so without naming them (`_withheld`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from gateway.admission.actors import kind_plural
from gateway.admission.admission import Facts, Plan, Target, TargetKey, caps_checked, decide, prepare
from gateway.admission.decision import Decision
from gateway.admission.dra import RESOURCE_KEYS, claim_shape, is_claim_kind, object_gpus
from gateway.admission.identity import Grant
from gateway.admission.plan import StatedFacts
from gateway.admission.policy import OWNER_ANNOTATION, TEAM_ANNOTATION, Policy
from gateway.admission.review import AdmissionRequest, GroupVersionKind
from gateway.admission.workloads import read_workload
from gateway.audit.history import keyed_digest
from gateway.errors import GatewayError, RequestError
from gateway.service import admission_job
from gateway.store.base import Store

ACTIONS = ("launch", "modify", "kill", "exec")
_OPERATION = {"launch": "CREATE", "modify": "UPDATE", "kill": "DELETE", "exec": "CONNECT"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_documents(text: str, source: str) -> list[Mapping[str, Any]]:
    """The objects in a YAML or JSON text (several documents and `kind: List` unrolled)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RequestError(f"{source}: not YAML or JSON: {exc}") from exc
    return flatten_documents(docs, source)


def flatten_documents(docs: Iterable[Any], source: str) -> list[Mapping[str, Any]]:
    """Objects, with `kind: List` unrolled; anything that is not an object is refused."""
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, Mapping))
        elif isinstance(doc, Mapping):
            out.append(doc)
        else:
            raise RequestError(f"{source}: a document is not an object")
    if not out:
        raise RequestError(f"{source}: no objects in it")
    return out


def _request(obj: Mapping[str, Any], user: str, groups: tuple[str, ...], action: str,
             namespace: str) -> AdmissionRequest:
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    kind = str(obj.get("kind") or "")
    if not kind or not version:
        raise RequestError("the object has no apiVersion or kind")
    meta = _mapping(obj.get("metadata"))
    name = str(meta.get("name") or meta.get("generateName") or "")
    resource = kind_plural(kind.lower())
    sub = ""
    if action == "exec":
        resource, group, sub = "pods", "", "exec"
    return AdmissionRequest(
        uid="check", kind=GroupVersionKind(group, version, kind), resource=resource,
        resource_group=group, sub_resource=sub, namespace=namespace, name=name,
        operation=_OPERATION[action], username=user, groups=groups,
        obj=obj if action in ("launch", "modify") else None,
        old_obj=obj if action in ("modify", "kill") else None,
    )


def _facts(obj: Mapping[str, Any], req: AdmissionRequest, plan_gpus: int, policy: Policy, action: str,
           owner: str | None, owner_team: str | None) -> Facts:
    """What the ledger would say about the target of a modify, kill or exec: its owner, from
    `owner` or the object's annotations."""
    if action == "launch":
        return Facts()
    ann = _mapping(_mapping(obj.get("metadata")).get("annotations"))
    target_owner = owner or str(ann.get(OWNER_ANNOTATION) or "")
    if not target_owner:
        return Facts()
    gpus = plan_gpus
    if not gpus and action == "exec":
        gpus = read_workload(obj, req.kind.group, req.kind.kind, policy.gpu, kinds=policy.kinds).gpus
    team = owner_team if owner_team is not None else str(ann.get(TEAM_ANNOTATION) or "")
    owner_role = policy.identity(target_owner, ()).role or ""
    return Facts(target=Target(target_owner, team, owner_role, gpus))


@dataclass(frozen=True)
class StoreView:
    """Where the what-if reads what is in use: a store (read, never written), or why there is none."""

    store: Store | None = None
    unread: str = "no store to read"
    """Why usage is not read, when `store` is None: it ends the result's `usage_note`."""
    now: float = field(default_factory=time.time)

    def grants(self) -> tuple[Grant, ...]:
        """The live break-glass grants (a plain read: expiring them is the gateway's job)."""
        if self.store is None:
            return ()
        rows = self.store.grants(now=self.now)
        return tuple(Grant(r["id"], r["user"], r["role"], r["expires_at"]) for r in rows if r["state"] == "active")


NO_STORE = StoreView()


def _recorded(read: Facts, explicit: bool) -> list[tuple[str, str]]:
    """(owner, team) of every ledger record a decision read (the target's too, unless the
    what-if stated its owner)."""
    own = [] if explicit else [read.target]
    found = [(t.owner, t.team) for t in (*own, read.parent, read.root, *read.references.values(),
                                         *read.by_uid.values()) if t is not None and t.owner]
    return found + [(owner, team) for owner, team in read.referrers if owner]


def check_one(obj: Mapping[str, Any], *, policy: Policy, user: str, groups: tuple[str, ...], action: str,
              owner: str | None, owner_team: str | None, namespace: str | None,
              claims: Mapping[TargetKey, Target] | None = None, store: StoreView = NO_STORE,
              grants: tuple[Grant, ...] = (), may_read: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """The decision for one object, as `gpu-gateway check -o json` prints it. `claims` are the
    DRA claims and claim templates the ledger would hold (those of the same input); `grants`
    the live break-glass grants; `may_read` as for `run_check`."""
    if action not in _OPERATION:
        raise RequestError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    ns = namespace or str(_mapping(obj.get("metadata")).get("namespace") or "default")
    req = _request(obj, user, groups, action, ns)
    plan = prepare(req, policy, grants)
    workload = plan.workload
    stated = _facts(obj, req, workload.gpus if workload else plan.old_gpus, policy, action, owner, owner_team)
    over = StatedFacts(stated, claims or {}, explicit=owner is not None)
    decision, facts, recorded, note = _decided(plan, policy, over, store)
    result = {
        "allowed": decision.allowed,
        "decision": decision.verdict,
        "action": action,
        "kind": req.kind.kind,
        "namespace": ns,
        "name": req.name,
        "user": user,
        "role": plan.identity.role,
        "teams": list(plan.identity.teams),
        "gpus": decision.gpus if decision.gpus else (workload.gpus if workload else 0),
        "gpus_detail": workload.describe_gpus() if workload else "",
        "charged_to": _charged_to(plan, decision),
        "rule": decision.rule,
        "mode": decision.mode.value,
        "reason": decision.reason,
        "warnings": list(decision.warnings),
        "caps": [{"rule": c.rule, "subject": c.subject, "limit": c.limit, "used": c.used, "asked": c.asked,
                  "fits": c.fits} for c in caps_checked(plan, policy, facts, decision, usage_known=not note)],
        "usage_read": not note,
        "usage_note": note,
        "policy_version": policy.version,
    }
    if may_read is not None and not all(may_read(owner, team) for owner, team in recorded):
        return _withheld(result, workload.gpus if workload else 0)
    return result


def _withheld(result: dict[str, Any], gpus: int) -> dict[str, Any]:
    """A result that read a ledger record of someone whose records the caller may not read (in the
    audit's scope): the verdict stays; what would name them or give their figures goes, and
    `gpus` are those of the manifest."""
    what = f"{result['action']} of {result['kind']} {result['namespace']}/{result['name']}"
    return {**result, "gpus": gpus, "charged_to": None, "caps": [], "warnings": [],
            "reason": f"gpu-gateway: {result['decision']} {what}: it depends on what the gateway's ledger holds for "
                      f"someone whose records {result['user']} may not read; `gpuctl workloads` lists what you may "
                      "see, and the owner, a lead of their team or an administrator can tell you more"}


def _decided(plan: Plan, policy: Policy, over: StatedFacts, store: StoreView,
             ) -> tuple[Decision, Facts, list[tuple[str, str]], str]:
    """The decision, the facts it was made on, the (owner, team) of the ledger records it read,
    and "" or why it was made without reading what is in use (then as if nothing were)."""
    if store.store is None:
        return _on_stated(plan, policy, over, f"usage not read: {store.unread}; GPUs in use count as 0")
    if plan.early is not None:
        return plan.early, over.over(over.facts), [], ""
    job = admission_job(plan, policy, now=store.now, digest=_NO_DIGEST, stated=over)
    if plan.action is not None and plan.action.value != "launch" and over.facts.target is not None:
        job = replace(job, owner=over.facts.target.owner, team=over.facts.target.team)
    try:
        decision, read = store.store.preview(job)
    except GatewayError as exc:
        return _on_stated(plan, policy, over,
                          f"usage not read: the store cannot be read ({exc}); GPUs in use count as 0")
    return decision, over.over(read), _recorded(read, over.explicit), ""


def _on_stated(plan: Plan, policy: Policy, over: StatedFacts, note: str,
               ) -> tuple[Decision, Facts, list[tuple[str, str]], str]:
    """Decided on what the what-if states alone (no ledger read)."""
    facts = over.over(over.facts)
    return decide(plan, policy, facts), facts, [], note


#: The what-if writes no audit record, so it hashes no values.
_NO_DIGEST = keyed_digest(bytes(16))


def _charged_to(plan: Plan, decision: Decision) -> str | None:
    """Who the GPUs are charged to: the owner of the workload they descend from (never the
    requester for someone else's workload, or an actor); None when the request holds none."""
    workload = plan.workload
    if workload is None or not workload.gpu_capable:
        return decision.owner or None if decision.gpus else None
    owner = (decision.reserve.owner if decision.reserve is not None else "") or decision.owner or plan.owner
    return owner or None


def run_check(docs: Iterable[Mapping[str, Any]], *, policy: Policy, user: str, groups: tuple[str, ...],
              action: str = "launch", owner: str | None = None, owner_team: str | None = None,
              namespace: str | None = None, store: StoreView = NO_STORE,
              may_read: Callable[[str, str], bool] | None = None) -> list[dict[str, Any]]:
    """The decision for each already-loaded document, in order, each on its own against what
    `store` holds now. DRA claims and claim templates among them count for the workloads that
    name them, as if the ledger had recorded them. `may_read(owner, team)`: whether the caller
    may read records of that owner and team (None: all)."""
    docs = list(docs)
    claims = _claims(docs, policy, user, namespace)
    try:
        grants = store.grants()
    except GatewayError:
        grants = ()  # decided with the roles groups give; `preview` says the store cannot be read
    return [check_one(obj, policy=policy, user=user, groups=groups, action=action, owner=owner,
                      owner_team=owner_team, namespace=namespace, claims=claims, store=store, grants=grants,
                      may_read=may_read)
            for obj in docs]


def _claims(docs: Iterable[Mapping[str, Any]], policy: Policy, user: str,
            namespace: str | None) -> dict[TargetKey, Target]:
    """Ledger records for the ResourceClaims and ResourceClaimTemplates among `docs`."""
    found: dict[TargetKey, Target] = {}
    for obj in docs:
        group, kind = str(obj.get("apiVersion") or "").rpartition("/")[0], str(obj.get("kind") or "")
        meta = _mapping(obj.get("metadata"))
        if not is_claim_kind(group, kind) or not isinstance(meta.get("name"), str):
            continue
        ns = namespace or str(meta.get("namespace") or "default")
        found[(RESOURCE_KEYS[kind], ns, meta["name"])] = Target(
            user, "", "", 0, charged=False, shape=claim_shape(object_gpus(kind, obj, policy.dra)))
    return found
