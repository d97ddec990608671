"""The policy in force, as plain data compiled from the operator's bundle.

casbin (model.conf + policy.csv) stays the source of truth an operator edits; the bundle
loader evaluates it once per (role, action, scope) into `permissions` so that the hot
path is a set lookup. Numeric limits live in typed data beside it (limits.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.admission.actors import Actors
from gateway.admission.decision import Mode
from gateway.admission.dra import DraPolicy
from gateway.admission.identity import Identity, resolve_identity
from gateway.admission.kinds import KindRegistry
from gateway.admission.podspec import DEFAULT_SAFE_CAPABILITIES
from gateway.admission.scheduling_settings import Scheduling
from gateway.admission.workloads import DEFAULT_GPU_RESOURCES, DEFAULT_NOT_GPU_RESOURCES, GpuMatcher

_T = TypeVar("_T")

OWNER_ANNOTATION = "gpu-gateway.io/owner"
TEAM_ANNOTATION = "gpu-gateway.io/team"

SHAREABLE_ANNOTATION = "gpu-gateway.io/shareable"

#: How the requester relates to a target, narrowest first. A permission on a wider scope
#: covers the narrower ones (`any` ⊃ `team` ⊃ `team-shared` ⊃ `own`). `team-shared` is a
#: target of one of the requester's teams that its owner annotated shareable.
SCOPES = ("own", "team-shared", "team", "any")

#: casbin actions. `reassign` is changing a workload's owner or team annotations; `mount`
#: is writing to a PersistentVolumeClaim; `read` is mounting a claim read-only, cloning or
#: snapshotting a claim, restoring a snapshot or reading a ConfigMap; `use-secret` is reading a
#: Secret (volume, envFrom, valueFrom, imagePullSecrets); `use` is running pods as a
#: ServiceAccount (the namespace's `default` and unowned ones are anyone's); `audit-read` is
#: reading audit records and usage through the admin API (one's own are always readable);
#: `approve` is approving another person's exception request (docs/approvals.md) and `grant`
#: is granting a temporary break-glass role; `manage` is changing run-time settings through
#: the admin API (`team`: the quotas of one's own teams; `any`: role bindings, every quota
#: and the policy itself, docs/admin.md); `report` is sending GPU telemetry (node agents, docs/agent.md).
POLICY_ACTIONS = ("launch", "modify", "kill", "exec", "reassign", "mount", "read", "use-secret", "use", "audit-read",
                  "approve", "grant", "manage", "report")

#: Every rule that can deny, with the hint a denial message ends with.
RULES: dict[str, str] = {
    "unreadable-object": "Fix the object so that it can be read; the gateway never admits what it cannot read.",
    "no-role": "Ask a cluster administrator to add you to a GPU group (for example gpu-researchers).",
    "owner-annotation": "Remove the gpu-gateway.io/owner and gpu-gateway.io/team annotations and labels; the gateway "
                        "sets them.",
    "team-annotation": "Set gpu-gateway.io/team to one of your own teams, or leave it out.",
    "priority-class": "Use a priority class your role may use, or ask a lead.",
    "workload-gpu-limit": "Ask a lead for an exception.",
    "user-quota": "Wait for your running workloads to finish, or delete one you no longer need.",
    "team-quota": "Ask your team lead to free GPUs or an administrator to raise the team cap.",
    "ownership": "Ask the owner, a lead of the owning team or an administrator.",
    "unowned-workload": "This workload predates the gateway's records; ask an administrator.",
    "unowned-object": "This object predates the gateway's records; ask an administrator.",
    "data-access": "",  # the message names the owner to ask
    "escape-hatch": "Pods may not reach the node or storage outside claims; ask an administrator if one must.",
    "second-person": "This needs a second person: request an approval (POST /api/v1/approvals, docs/approvals.md).",
    "gpu-hour-budget": "Wait for the next budget period, or ask an administrator to raise the budget.",
    "actor-scope": "Controllers act only for workloads the gateway admitted; list the controller and the kinds "
                   "it creates in limits.yaml actors.",
    "root-allowance": "Scale or change the workload the gateway admitted (its root), not the objects its "
                      "controllers made.",
    "unresolved-gpus": "Make its GPUs countable as said (for a kind of your own, register it in limits.yaml "
                       "workload_kinds, see README), or ask an administrator to launch it.",
    "grace-period": "Lower terminationGracePeriodSeconds of the GPU pods.",
    "claim-growth": "Create a new ResourceClaimTemplate or ResourceClaim with the devices you need and "
                    "reference that one instead.",
}

#: Rules whose mode cannot be relaxed: an object the gateway cannot read is never admitted.
ALWAYS_ENFORCED = frozenset({"unreadable-object"})


@dataclass(frozen=True, slots=True)
class RoleLimits:
    max_gpus_per_workload: int | None = None
    """Largest workload (total GPUs, worst case) the role may launch; None is unlimited."""
    max_concurrent_gpus: int | None = None
    """GPUs one user of the role may hold at once across workloads; None is unlimited."""
    priority_classes: frozenset[str] | None = None
    """Priority classes the role may use ("" is none set); None allows every class."""
    escape_hatches: frozenset[str] = frozenset()
    """Escape hatches (podspec.HATCHES) the role's GPU pods may use."""


_NO_LIMITS = RoleLimits()


@dataclass(frozen=True, slots=True)
class SecondPerson:
    """Requests that need another person's approval whoever asks, admins included (None: never)."""

    launch_over_gpus: int | None = None
    """A launch (or a modify to) more GPUs than this."""
    touch_others_over_gpus: int | None = None
    """A kill or modify of another person's workload holding more GPUs than this."""
    policy_change: bool = True
    """Replacing the policy through the admin API."""


@dataclass(frozen=True)
class Policy:
    bindings: Mapping[str, frozenset[str]]
    """casbin subject (`group:NAME`, `user:NAME`) → every role it holds, inheritance resolved."""
    role_order: tuple[str, ...]
    """Roles from most to least privileged; a user's role is the first one they hold."""
    permissions: frozenset[tuple[str, str, str]]
    """(role, action, scope) triples that casbin allows."""
    limits: Mapping[str, RoleLimits] = field(default_factory=dict)
    team_caps: Mapping[str, int | None] = field(default_factory=dict)
    """Concurrent GPUs per team; None is unlimited (a run-time setting can lift a cap)."""
    user_caps: Mapping[str, int | None] = field(default_factory=dict)
    """Concurrent GPUs per user, set at run time, instead of their role's; None is unlimited."""
    default_team_cap: int | None = None
    team_prefix: str = "team:"
    exempt_namespaces: frozenset[str] = frozenset({"kube-system"})
    actors: Actors = field(default_factory=Actors)
    """Controllers, operators and autoscalers and the kinds they may create (admission/actors.py)."""
    gpu_resources: tuple[str, ...] = DEFAULT_GPU_RESOURCES
    not_gpu_resources: tuple[str, ...] = DEFAULT_NOT_GPU_RESOURCES
    modes: Mapping[str, Mode] = field(default_factory=dict)
    unowned_roles: frozenset[str] = frozenset()
    """Roles that may modify or kill a GPU workload, or change a volume claim, ConfigMap or
    Secret, that the ledger has no owner for (and mount such a claim read-write)."""
    safe_capabilities: frozenset[str] = DEFAULT_SAFE_CAPABILITIES
    """Linux capabilities a GPU pod may add without the `capabilities` escape hatch."""
    allowed_schedulers: frozenset[str] = frozenset({"default-scheduler"})
    """Scheduler names a GPU pod may use without the `schedulerName` escape hatch."""
    ignored_references: frozenset[tuple[str, str]] = frozenset({("ConfigMap", "kube-root-ca.crt")})
    """(kind, name) of objects every pod may read (published by the cluster itself)."""
    max_gpu_termination_grace_s: int | None = None
    """The longest `terminationGracePeriodSeconds` a GPU pod may set (limits.yaml
    `max_gpu_termination_grace_seconds`; None: any)."""
    second_person: SecondPerson = field(default_factory=SecondPerson)
    """Requests that need a second person's approval (limits.yaml `second_person`)."""
    scheduling: Scheduling = field(default_factory=Scheduling)
    """Over-quota mode (reject or queue), queue priorities, fair shares, budgets (limits.yaml `scheduling`)."""
    kinds: KindRegistry = field(default_factory=KindRegistry)
    """Workload kinds the operator registered (limits.yaml `workload_kinds`), read after the built-in adapters."""
    dra: DraPolicy = field(default_factory=DraPolicy)
    """Which DRA device classes are GPUs and what `allocationMode: All` counts as (limits.yaml `dra`)."""
    version: str = ""
    """Digest of the bundle this was compiled from, recorded with every audit row."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu", GpuMatcher(self.gpu_resources, self.not_gpu_resources))
        object.__setattr__(self, "_identity_cache", {})
        covered = {
            (role, action, narrower)
            for role, action, scope in self.permissions if scope in SCOPES
            for narrower in SCOPES[: SCOPES.index(scope) + 1]
        }
        object.__setattr__(self, "_covered", frozenset(covered))
        object.__setattr__(self, "_derived", {})

    gpu: GpuMatcher = field(init=False, repr=False, compare=False)
    _covered: frozenset[tuple[str, str, str]] = field(init=False, repr=False, compare=False)
    """`permissions` with each scope's narrower scopes added, so that `may` is one lookup."""

    def identity(self, user: str, groups: tuple[str, ...]) -> Identity:
        cache: dict[tuple[str, tuple[str, ...]], Identity] = self._identity_cache  # type: ignore[attr-defined]
        key = (user, groups)
        hit = cache.get(key)
        if hit is None:
            hit = resolve_identity(
                user,
                groups,
                bindings=self.bindings,
                role_order=self.role_order,
                team_prefix=self.team_prefix,
                actors=self.actors,
            )
            if len(cache) > 100_000:
                cache.clear()
            cache[key] = hit
        return hit

    def derived(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """A value computed from this policy alone (and `key`), once: what denials name, for
        example, is the same for every request alike."""
        found: dict[Hashable, Any] = self._derived  # type: ignore[attr-defined]
        if key not in found:
            if len(found) > 10_000:
                found.clear()
            found[key] = compute()
        value: _T = found[key]
        return value

    def holders(self, role: str) -> tuple[str, ...]:
        """The subjects (`group:NAME`, `user:NAME`) whose role `role` is (the first in `role_order`
        they are bound to), sorted; what denials name as the people who may approve."""
        def compute() -> dict[str, tuple[str, ...]]:
            rank = {r: i for i, r in enumerate(self.role_order)}
            by_role: dict[str, list[str]] = {}
            for subject, roles in self.bindings.items():
                held = [r for r in roles if r in rank]
                if held:
                    by_role.setdefault(min(held, key=rank.__getitem__), []).append(subject)
            return {r: tuple(sorted(subjects)) for r, subjects in by_role.items()}
        return self.derived("holders", compute).get(role, ())

    def mode(self, rule: str) -> Mode:
        if rule in ALWAYS_ENFORCED:
            return Mode.ENFORCE
        return self.modes.get(rule, Mode.ENFORCE)

    def role_limits(self, role: str | None) -> RoleLimits:
        return self.limits.get(role or "", _NO_LIMITS)

    def assigned_role(self, user: str) -> str:
        """The role a workload handed to `user` (reassign) is held to: their own binding when
        policy.csv binds `user:NAME` to a role (their groups are not in the request), else the
        role with the lowest cap on concurrent GPUs, so that no reassignment lifts a cap."""
        rank = {r: i for i, r in enumerate(self.role_order)}
        bound = [r for r in self.bindings.get(f"user:{user}", ()) if r in rank]
        if bound:
            return min(bound, key=rank.__getitem__)
        capped = [(cap, -rank.get(role, -1), role) for role, limits in self.limits.items()
                  if (cap := limits.max_concurrent_gpus) is not None]
        return min(capped)[2] if capped else (self.role_order[-1] if self.role_order else "")

    def user_cap(self, user: str, role: str | None) -> int | None:
        if user in self.user_caps:
            return self.user_caps[user]
        return self.role_limits(role).max_concurrent_gpus

    def team_cap(self, team: str) -> int | None:
        if not team:
            return None
        return self.team_caps.get(team, self.default_team_cap)

    def may(self, role: str | None, action: str, scope: str) -> bool:
        """Whether `role` may do `action` on a target at `scope` (or any wider scope)."""
        return role is not None and (role, action, scope) in self._covered

    def widest_scope(self, role: str | None, action: str) -> str | None:
        for s in reversed(SCOPES):
            if role is not None and (role, action, s) in self.permissions:
                return s
        return None


def relation(identity: Identity, owner: str, team: str, *, shareable: bool = False) -> str:
    """`own`, `team-shared`, `team` or `any`: how the requester relates to a target."""
    if owner and owner == identity.user:
        return "own"
    if team and team in identity.teams:
        return "team-shared" if shareable else "team"
    return "any"
