"""Sabotage defence past the job object: which data a pod may reach, and which pods may
reach the node.

A pod's references (PersistentVolumeClaims, ConfigMaps, Secrets, ServiceAccounts, and the
claims and snapshots its volume claims clone) are checked against the owners the ledger
recorded for them; pods of roles without the matching allowance may not use escape hatches
(host paths and namespaces, privilege, capabilities, a preset node, another scheduler, inline
storage, NVIDIA runtime variables). Objects created by trusted controllers are not checked
again: their templates were checked when the person submitted the workload (an actor's GPU
pods are checked against their owner's role).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.admission.decision import Violation
from gateway.admission.identity import Identity
from gateway.admission.plan import Facts, Plan, reference_key
from gateway.admission.podspec import (
    PVC,
    SECRET,
    SERVICE_ACCOUNT,
    Reference,
    clone_sources,
    debugs_node,
    escape_hatches,
    references,
)
from gateway.admission.pointer import is_object, resolve
from gateway.admission.policy import Policy, relation
from gateway.admission.verdict import violation
from gateway.admission.workloads import Workload

PodSpecs = tuple[tuple[str, Mapping[str, Any]], ...]


def pod_templates(obj: Any, workload: Workload) -> dict[str, Any]:
    """The object's nodes by pointer: itself at "" and each pod set's template, read once per
    request (Plan.templates), since several checks read a template's metadata or spec."""
    nodes = {"": obj}
    for ps in workload.pod_sets:
        if ps.template_path and ps.template_path not in nodes:
            nodes[ps.template_path] = resolve(obj, ps.template_path)
    return nodes


def pod_specs(obj: Any, workload: Workload, templates: Mapping[str, Any] | None = None,
              ) -> tuple[tuple[str, Mapping[str, Any], int], ...]:
    """(template path, pod spec, GPUs per pod) for each pod set whose template lives in the
    object; `templates` are its nodes by pointer, when already read (`pod_templates`). Pod sets
    are told apart by path: two may share a name."""
    nodes = templates or {}
    out = []
    for ps in workload.pod_sets:
        path = ps.template_path
        if path is None:
            continue
        template = nodes[path] if path in nodes else resolve(obj, path)
        spec = template.get("spec") if is_object(template) else None
        if is_object(spec):
            out.append((path, spec, ps.gpus_each))
    return tuple(out)


def collect(obj: Any, workload: Workload, policy: Policy, *, gpu_only: bool = False,
            templates: Mapping[str, Any] | None = None,
            ) -> tuple[tuple[tuple[str, Reference], ...], PodSpecs]:
    """The references to check (of the pod specs, and the clone sources of the object's
    StatefulSet-style `volumeClaimTemplates`), and the pod specs to check for escape hatches,
    each with its template path: every pod set's, or with `gpu_only` those that ask for GPUs
    (at any count: a template at 0 replicas runs GPU pods once scaled). `templates` as for `pod_specs`."""
    refs: list[tuple[str, Reference]] = []
    specs = []
    for path, spec, gpus_each in pod_specs(obj, workload, templates):
        refs += [(path, r) for r in references(spec) if (r.kind, r.name) not in policy.ignored_references]
        if gpus_each or not gpu_only:
            specs.append((path, spec))
    claim_templates = resolve(obj, "/spec/volumeClaimTemplates")
    if isinstance(claim_templates, list):
        for i, template in enumerate(claim_templates):
            if is_object(template):
                refs.extend((f"/spec/volumeClaimTemplates/{i}", r)
                            for r in clone_sources(template.get("spec"), f"volumeClaimTemplates[{i}]"))
    return tuple(refs), tuple(specs)


def reaches(plan: Plan, policy: Policy) -> bool:
    """Whether a workload's pods reach anything the gateway decides: a reference, an escape
    hatch or a node debugging shape (a workload that reaches nothing passes unaudited)."""
    return bool(plan.references) or any(
        debugs_node(spec) or escape_hatches(spec, safe_capabilities=policy.safe_capabilities,
                                            allowed_schedulers=policy.allowed_schedulers)
        for _, spec in plan.pod_specs)


def referenced_names(plan: Plan) -> tuple[tuple[str, str], ...]:
    """(resource key, name) of every object the workload's pods reference, for the ledger's
    `refs` (name squatting), in order, once each."""
    namespace = plan.request.namespace
    return tuple(dict.fromkeys((reference_key(namespace, r)[0], r.name) for _, r in plan.references))


def _action(ref: Reference) -> str:
    if ref.kind == SECRET:
        return "use-secret"
    if ref.kind == SERVICE_ACCOUNT:
        return "use"
    return "mount" if ref.kind == PVC and ref.writable else "read"


def _phrase(ref: Reference, namespace: str) -> str:
    """`mount PersistentVolumeClaim ns/x read-write`, `read Secret ns/y (envFrom of container c)`."""
    if ref.clone:
        return f"clone {ref.kind} {namespace}/{ref.name} ({ref.via})"
    if ref.kind == SERVICE_ACCOUNT:
        return f"run pods as {SERVICE_ACCOUNT} {namespace}/{ref.name}"
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
        key = (ref.kind, ref.name, action)
        if key in seen:
            continue
        seen.add(key)
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
    """A violation for each escape hatch a checked pod uses that the requester's (or
    `identity`'s) role may not; a pod shaped like `kubectl debug node/NAME` (a root shell on
    the node, an exec into every pod there) only for roles that may exec into any workload."""
    ident = identity or plan.identity
    allowed = policy.role_limits(ident.role).escape_hatches
    seen: set[tuple[str, str]] = set()
    for pod_set, spec in plan.pod_specs:
        node = debugs_node(spec)
        if node and not policy.may(ident.role, "exec", "any") and ("debug", node) not in seen:
            seen.add(("debug", node))
            violations.append(violation(policy, "escape-hatch",
                f"{ident.describe()} may not run a node debugging pod (kubectl debug node/{node}): the pod "
                f"presets node {node}, shares its host namespaces and mounts its root file system"
                f"{_template(pod_set)}",
                hint="Ask an administrator to debug the node."))
        for hatch in escape_hatches(spec, safe_capabilities=policy.safe_capabilities,
                                    allowed_schedulers=policy.allowed_schedulers):
            if hatch.name in allowed or (hatch.name, hatch.detail) in seen:
                continue
            seen.add((hatch.name, hatch.detail))
            violations.append(violation(policy, "escape-hatch",
                f"{ident.describe()} may not use {hatch.name} in pods: the pod {hatch.detail}{_template(pod_set)}"))


def _template(path: str) -> str:
    """` (pod template spec.template)` for a workload's template, nothing for a bare pod."""
    return f" (pod template {path.lstrip('/').replace('/', '.')})" if path else ""
