"""`gpu-gateway check`: run a manifest through the core as if a user submitted it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.core.admission import Facts, Target, decide, prepare
from gateway.core.policy import OWNER_ANNOTATION, TEAM_ANNOTATION
from gateway.core.review import AdmissionRequest, GroupVersionKind
from gateway.errors import RequestError
from gateway.policy_bundle import PolicyHolder, default_policy_dir

_OPERATION = {"launch": "CREATE", "modify": "UPDATE", "kill": "DELETE", "exec": "CONNECT"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def load_documents(file: Path) -> list[Mapping[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise RequestError(f"{file}: not YAML or JSON: {exc}") from exc
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, Mapping))
        elif isinstance(doc, Mapping):
            out.append(doc)
        else:
            raise RequestError(f"{file}: a document is not an object")
    if not out:
        raise RequestError(f"{file}: no objects in it")
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
    resource = kind.lower() + "s"
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


def run_check(*, user: str, groups: tuple[str, ...], file: Path, action: str, owner: str | None,
              owner_team: str | None, namespace: str | None,
              policy_dir: Path | None) -> list[dict[str, Any]]:
    policy = PolicyHolder(policy_dir or default_policy_dir()).policy
    results = []
    for obj in load_documents(file):
        meta = _mapping(obj.get("metadata"))
        ns = namespace or str(meta.get("namespace") or "default")
        req = _request(obj, user, groups, action, ns)
        plan = prepare(req, policy)
        facts = Facts()
        if action != "launch":
            ann = _mapping(meta.get("annotations"))
            target_owner = owner or str(ann.get(OWNER_ANNOTATION) or "")
            gpus = plan.workload.gpus if plan.workload else plan.old_gpus
            if not gpus and action == "exec":
                from gateway.core.workloads import read_workload

                gpus = read_workload(obj, req.kind.group, req.kind.kind, policy.gpu).gpus
            if target_owner:
                team = owner_team if owner_team is not None else str(ann.get(TEAM_ANNOTATION) or "")
                owner_role = policy.identity(target_owner, ()).role or ""
                facts = Facts(target=Target(target_owner, team, owner_role, gpus))
        decision = decide(plan, policy, facts)
        workload = plan.workload
        results.append({
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
            "rule": decision.rule,
            "mode": decision.mode.value,
            "reason": decision.reason,
            "warnings": list(decision.warnings),
            "policy_version": policy.version,
        })
    return results
