"""Run-time settings layered over the policy bundle: role bindings and quotas set through the
admin API (docs/admin.md).

Pure: the store keeps the settings, every replica reads them and `apply` them to the
bundle's `Policy`. A setting names what it overrides and nothing else; removing it brings
back the bundle's value.

- binding `group:NAME` or `user:NAME` -> the roles that subject holds (an empty list takes
  the subject's roles away, also those the bundle gives it);
- quota `user:NAME`, `team:NAME` -> `max_concurrent_gpus`; `role:NAME` -> that and
  `max_gpus_per_workload`. A field set to null means unlimited.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.admission.policy import Policy, RoleLimits
from gateway.admission.scheduling_settings import OverQuota

SUBJECT_PREFIXES = ("group:", "user:")
QUOTA_FIELDS: Mapping[str, tuple[str, ...]] = {
    "user": ("max_concurrent_gpus",),
    "team": ("max_concurrent_gpus",),
    "role": ("max_gpus_per_workload", "max_concurrent_gpus"),
}
#: Kinds of stored setting.
BINDING, QUOTA = "binding", "quota"


class SettingError(ValueError):
    """A setting that cannot be applied; the message says what to change."""


@dataclass(frozen=True)
class Overrides:
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """`group:NAME`/`user:NAME` -> roles (replacing the bundle's roles for that subject)."""
    quotas: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    """`user:NAME`/`team:NAME`/`role:NAME` -> the fields it sets."""

    @property
    def empty(self) -> bool:
        return not self.bindings and not self.quotas

    def digest(self) -> str:
        text = json.dumps({"b": self.bindings, "q": self.quotas}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def check_subject(subject: str) -> str:
    prefix = next((p for p in SUBJECT_PREFIXES if subject.startswith(p)), None)
    if prefix is None or not subject[len(prefix):].strip():
        raise SettingError(f"subject {subject!r} must be group:NAME or user:NAME")
    return subject


def check_binding(policy: Policy, subject: str, roles: Any) -> tuple[str, ...]:
    """The roles of a binding, validated against the bundle's roles."""
    check_subject(subject)
    if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
        raise SettingError("roles must be a list of role names")
    unknown = sorted(set(roles) - set(policy.role_order))
    if unknown:
        raise SettingError(f"unknown role(s) {', '.join(unknown)} (roles: {', '.join(policy.role_order)})")
    return tuple(sorted(set(roles), key=policy.role_order.index))


def split_target(target: str) -> tuple[str, str]:
    """`team:vision` -> ("team", "vision"), validated."""
    scope, _, name = target.partition(":")
    if scope not in QUOTA_FIELDS or not name.strip():
        raise SettingError(f"quota target {target!r} must be user:NAME, team:NAME or role:NAME")
    return scope, name


def check_quota(policy: Policy, target: str, values: Any) -> dict[str, int | None]:
    """The fields of a quota setting, validated: known fields, non-negative integers or null."""
    scope, name = split_target(target)
    if scope == "role" and name not in policy.role_order:
        raise SettingError(f"unknown role {name!r} (roles: {', '.join(policy.role_order)})")
    if not isinstance(values, Mapping) or not values:
        raise SettingError(f"a {scope} quota sets one or more of {', '.join(QUOTA_FIELDS[scope])}")
    out: dict[str, int | None] = {}
    for key, value in values.items():
        if key not in QUOTA_FIELDS[scope]:
            raise SettingError(f"{key!r} is not a {scope} quota (known: {', '.join(QUOTA_FIELDS[scope])})")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SettingError(f"{key} must be a non-negative integer or null (unlimited), not {value!r}")
        out[str(key)] = value
    return out


def quota_view(policy: Policy, target: str) -> dict[str, int | None]:
    """The quota in force for `user:`, `team:` or `role:` NAME (after overrides). A user without
    a quota of their own gets `{}`: their role's quota applies."""
    scope, name = split_target(target)
    if scope == "role":
        limits = policy.role_limits(name)
        return {"max_gpus_per_workload": limits.max_gpus_per_workload,
                "max_concurrent_gpus": limits.max_concurrent_gpus}
    if scope == "team":
        return {"max_concurrent_gpus": policy.team_cap(name)}
    return {"max_concurrent_gpus": policy.user_caps[name]} if name in policy.user_caps else {}


def over_quota(policy: Policy, target: str, users: Mapping[str, int], teams: Mapping[str, int],
               roles: Mapping[str, str]) -> list[str]:
    """Warnings for a quota of `target` in force (`policy`) below what is held: `users` and
    `teams` hold GPUs now, and `roles` is each user's role as the ledger recorded it. A role's
    cap concerns its users without a quota of their own. A lower cap stops nothing: admission
    adds no GPUs past it, and shrinking is always allowed (admission/quota.py)."""
    scope, name = split_target(target)
    if scope == "team":
        cap, fate = policy.team_cap(name), _fate(policy, None, name)
        held = teams.get(name, 0)
        over = f"team {name} holds {held} GPUs, above its cap of {cap}" if cap is not None and held > cap else ""
    elif scope == "user":
        cap, fate = policy.user_cap(name, roles.get(name)), _fate(policy, roles.get(name), "")
        held = users.get(name, 0)
        over = f"user {name} holds {held} GPUs, above the cap of {cap}" if cap is not None and held > cap else ""
    else:
        cap, fate = policy.role_limits(name).max_concurrent_gpus, _fate(policy, name, "")
        found = [f"{user} ({held})" for user, held in sorted(users.items())
                 if roles.get(user) == name and user not in policy.user_caps and cap is not None and held > cap]
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        over = f"users of role {name} hold more GPUs than its cap of {cap}: {shown}" if found else ""
    if not over:
        return []
    return [f"{over}; running workloads keep running (nothing is stopped, and scaling down is always allowed), "
            f"{fate} until usage is under the cap"]


_QUEUED = "new launches wait in the GPU queue and scale-ups are denied"
_DENIED = "new launches and scale-ups are denied"


def _fate(policy: Policy, role: str | None, team: str) -> str:
    """What a GPU launch or scale-up over a cap gets, for `role`, or for the members of `team`
    (limits.yaml `scheduling`: queue mode queues launches; scale-ups over a cap are denied)."""
    scheduling = policy.scheduling
    if role is not None or team in scheduling.teams:
        return _QUEUED if scheduling.mode(role, team) is OverQuota.QUEUE else _DENIED
    roles = [r for r in policy.role_order if scheduling.mode(r, team) is OverQuota.QUEUE]
    if not roles or len(roles) == len(policy.role_order):
        return _QUEUED if roles else _DENIED
    return (f"new launches are denied (those of roles {', '.join(roles)} wait in the GPU queue) "
            "and scale-ups are denied")


def apply(policy: Policy, overrides: Overrides) -> Policy:
    """`policy` with the run-time settings in force; its version names both."""
    if overrides.empty:
        return policy
    bindings = dict(policy.bindings)
    for subject, roles in overrides.bindings.items():
        if roles:
            bindings[subject] = frozenset(roles)
        else:
            bindings.pop(subject, None)
    limits = dict(policy.limits)
    team_caps = dict(policy.team_caps)
    user_caps = dict(policy.user_caps)
    for target, values in overrides.quotas.items():
        scope, name = split_target(target)
        if scope == "role":
            base = limits.get(name, RoleLimits())
            limits[name] = replace(
                base,
                max_gpus_per_workload=values.get("max_gpus_per_workload", base.max_gpus_per_workload),
                max_concurrent_gpus=values.get("max_concurrent_gpus", base.max_concurrent_gpus),
            )
        elif scope == "team":
            team_caps[name] = values["max_concurrent_gpus"]
        else:
            user_caps[name] = values["max_concurrent_gpus"]
    return replace(policy, bindings=bindings, limits=limits, team_caps=team_caps, user_caps=user_caps,
                   version=f"{policy.version}+{overrides.digest()}")
