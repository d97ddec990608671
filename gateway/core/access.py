"""Sabotage defence past the job object: which data a pod may reach, and which GPU pods
may reach the node.

A pod's references (PersistentVolumeClaims, ConfigMaps, Secrets) are checked against the
owners the ledger recorded for them; GPU pods of roles without the matching allowance may
not use escape hatches (host paths and namespaces, privilege, capabilities, a preset node,
another scheduler). Objects created by trusted controllers are not checked again: their
templates were checked when the person submitted the workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.decision import Violation
from gateway.core.identity import Identity
from gateway.core.plan import Facts, Plan, reference_key
from gateway.core.podspec import PVC, SECRET, Reference, escape_hatches, references
from gateway.core.pointer import is_object, resolve
from gateway.core.policy import Policy, relation
from gateway.core.verdict import violation
from gateway.core.workloads import Workload

PodSpecs = tuple[tuple[str, Mapping[str, Any]], ...]


def pod_specs(obj: Any, workload: Workload) -> tuple[tuple[str, Mapping[str, Any], int], ...]:
    """(template path, pod spec, GPUs per pod) for each pod set whose template lives in the
    object. Pod sets are told apart by path: two may share a name."""
    out = []
    for ps in workload.pod_sets:
        if ps.template_path is None:
            continue
        spec = resolve(obj, f"{ps.template_path}/spec")
        if is_object(spec):
            out.append((ps.template_path, spec, ps.gpus_each))
    return tuple(out)


def collect(obj: Any, workload: Workload, policy: Policy) -> tuple[tuple[tuple[str, Reference], ...], PodSpecs]:
    """The references to check, and the pod specs of the pod sets that ask for GPUs (at any
    count: a template at 0 replicas runs GPU pods once scaled), each with its template path."""
    refs: list[tuple[str, Reference]] = []
    gpu_specs = []
    for path, spec, gpus_each in pod_specs(obj, workload):
        refs.extend((path, r) for r in references(spec) if (r.kind, r.name) not in policy.ignored_references)
        if gpus_each:
            gpu_specs.append((path, spec))
    return tuple(refs), tuple(gpu_specs)


def _action(ref: Reference) -> str:
    if ref.kind == SECRET:
        return "use-secret"
    return "mount" if ref.kind == PVC and ref.writable else "read"


def _phrase(ref: Reference, namespace: str) -> str:
    """`mount PersistentVolumeClaim ns/x read-write`, `read Secret ns/y (envFrom of container c)`."""
    if ref.kind == PVC:
        return f"mount {PVC} {namespace}/{ref.name} {'read-write' if ref.writable else 'read-only'}"
    return f"read {ref.kind} {namespace}/{ref.name} ({ref.via})"


def access_checks(plan: Plan, policy: Policy, facts: Facts, violations: list[Violation],
                  identity: Identity | None = None) -> None:
    """A violation for each referenced object the requester (or `identity`, the owner an
    actor creates for) may not reach."""
    ident, namespace = identity or plan.identity, plan.request.namespace
    seen: set[tuple[str, str, str]] = set()
    for _, ref in plan.references:
        action = _action(ref)
        if (ref.kind, ref.name, action) in seen:
            continue
        seen.add((ref.kind, ref.name, action))
        target = facts.references.get(reference_key(namespace, ref))
        if target is None or not target.owner:
            if action == "mount" and ident.role not in policy.unowned_roles:
                violations.append(violation(policy, "data-access",
                    f"{ident.describe()} may not {_phrase(ref, namespace)}; it has no recorded owner",
                    hint="Mount it readOnly or ask an administrator."))
            continue
        rel = relation(ident, target.owner, target.team, shareable=target.shareable)
        if rel == "own" or policy.may(ident.role, action, rel):
            continue
        team = f" (team {target.team})" if target.team else ""
        hint = f"Mount it readOnly or ask {target.owner}." if action == "mount" else f"Ask {target.owner}."
        violations.append(violation(policy, "data-access",
            f"{ident.describe()} may not {_phrase(ref, namespace)}; it belongs to {target.owner}{team}",
            hint=hint))


def hatch_checks(plan: Plan, policy: Policy, violations: list[Violation], identity: Identity | None = None) -> None:
    """A violation for each escape hatch a GPU pod uses that the requester's (or `identity`'s) role may not."""
    ident = identity or plan.identity
    allowed = policy.role_limits(ident.role).escape_hatches
    seen: set[tuple[str, str]] = set()
    for pod_set, spec in plan.gpu_pod_specs:
        for hatch in escape_hatches(spec, safe_capabilities=policy.safe_capabilities,
                                    allowed_schedulers=policy.allowed_schedulers):
            if hatch.name in allowed or (hatch.name, hatch.detail) in seen:
                continue
            seen.add((hatch.name, hatch.detail))
            where = "" if not pod_set else f" (pod template {pod_set.lstrip('/').replace('/', '.')})"
            violations.append(violation(policy, "escape-hatch",
                f"{ident.describe()} may not use {hatch.name} in GPU pods: the pod {hatch.detail}{where}"))
