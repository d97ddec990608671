"""The scheduler shim's settings (limits.yaml `scheduling`), parsed and validated. Pure.

```yaml
scheduling:
  over_quota: reject        # reject | queue: what a launch over a cap or a spent budget gets
  roles: {researcher: queue}
  teams: {vision: queue}    # a team's setting wins over its role's, which wins over over_quota
  priority_classes: {high: 1000, low: -10}   # queue priority per class; others 0
  team_shares: {vision: 2}  # fair-share weight per team (default 1)
  wait_limit_s: 3600        # after this wait a workload holds its GPUs back (null: never)
  gang_timeout_s: 600       # a released gang whose pods do not all appear in time is dropped
  budget_period: month      # rolling-<N>d, or calendar day | week | month (UTC)
  budgets:
    teams: {vision: 100000} # GPU-hours per period
    users: {alice: 500}
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from gateway.errors import ConfigError

_T = TypeVar("_T")

QUOTA_GATE = "gpu-gateway.io/quota"
"""The scheduling gate the mutating webhook adds to every pod of a workload in queue mode."""
WORKLOAD_ANNOTATION = "gpu-gateway.io/workload"
"""Stamped on queue-mode workloads and their pod templates: `resource/namespace/name`, the
ledger key that ties a pod to the workload whose gang it belongs to."""
MIN_PODS_ANNOTATION = "gpu-gateway.io/min-pods"
"""On a workload: how many of its GPU pods must exist before the queue may release it (the
gang's configured minimum; default all). The whole workload's GPUs are charged either way, and
pods that appear later start at once."""
GATEWAY_SERVICE_ACCOUNT = "system:serviceaccount:gpu-gateway:gpu-gateway"
"""The gateway's own identity by default (`serve --service-account`, GPU_GATEWAY_SERVICE_ACCOUNT)."""
QUEUE_ANNOTATION = "gpu-gateway.io/queue"
"""Set by the controller on waiting workloads' pods: position and reason."""


class OverQuota(StrEnum):
    REJECT = "reject"
    """Deny a launch that would break a cap (the default)."""
    QUEUE = "queue"
    """Admit it gated; it waits in the queue until the whole gang fits."""


@dataclass(frozen=True, slots=True)
class Scheduling:
    over_quota: OverQuota = OverQuota.REJECT
    roles: Mapping[str, OverQuota] = field(default_factory=dict)
    teams: Mapping[str, OverQuota] = field(default_factory=dict)
    priority_classes: Mapping[str, int] = field(default_factory=dict)
    team_shares: Mapping[str, float] = field(default_factory=dict)
    wait_limit_s: float | None = 3600.0
    gang_timeout_s: float = 600.0
    budget_period: str = "month"
    team_budgets: Mapping[str, float] = field(default_factory=dict)
    """GPU-hours per period, per team."""
    user_budgets: Mapping[str, float] = field(default_factory=dict)
    queueing: bool = field(init=False, repr=False, compare=False)
    """Whether any launch can queue (and so whether pods are gated at all)."""

    def __post_init__(self) -> None:
        queueing = self.over_quota is OverQuota.QUEUE or OverQuota.QUEUE in (*self.roles.values(),
                                                                           *self.teams.values())
        object.__setattr__(self, "queueing", queueing)

    def mode(self, role: str | None, team: str) -> OverQuota:
        """The over-quota mode of a launch: the team's setting, else the role's, else the default."""
        if team and team in self.teams:
            return self.teams[team]
        if role and role in self.roles:
            return self.roles[role]
        return self.over_quota


_KEYS = {"over_quota", "roles", "teams", "priority_classes", "team_shares", "wait_limit_s", "gang_timeout_s",
         "budget_period", "budgets"}


def parse_scheduling(raw: Any) -> Scheduling:
    """limits.yaml `scheduling` → Scheduling; ConfigError naming the setting on bad input."""
    if raw is None:
        return Scheduling()
    spec = _mapping(raw, "scheduling")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"limits.yaml: scheduling: unknown setting(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KEYS))})")
    budgets = _mapping(spec.get("budgets"), "scheduling.budgets")
    extra = sorted(set(budgets) - {"teams", "users"})
    if extra:
        raise ConfigError(f"limits.yaml: scheduling.budgets: unknown setting(s) {', '.join(extra)} "
                          "(known: teams, users)")
    period = spec.get("budget_period", "month")
    if not isinstance(period, str):
        raise ConfigError(f"limits.yaml: scheduling.budget_period must be a string, not {period!r}")
    period_start(0.0, period)  # validates
    wait = spec.get("wait_limit_s", 3600)
    return Scheduling(
        over_quota=_mode(spec.get("over_quota", "reject"), "scheduling.over_quota"),
        roles=_each(spec, "roles", _mode),
        teams=_each(spec, "teams", _mode),
        priority_classes=_each(spec, "priority_classes", _int),
        team_shares=_each(spec, "team_shares", lambda v, where: _number(v, where, positive=True)),
        wait_limit_s=None if wait is None else _number(wait, "scheduling.wait_limit_s"),
        gang_timeout_s=_number(spec.get("gang_timeout_s", 600), "scheduling.gang_timeout_s", positive=True),
        budget_period=period,
        team_budgets=_each(budgets, "teams", _number, "scheduling.budgets"),
        user_budgets=_each(budgets, "users", _number, "scheduling.budgets"),
    )


def _each(spec: Mapping[str, Any], key: str, parse: Callable[[Any, str], _T],
          where: str = "scheduling") -> dict[str, _T]:
    """`spec[key]`, a mapping of names to values, each value read by `parse`."""
    return {str(k): parse(v, f"{where}.{key}.{k}") for k, v in _mapping(spec.get(key), f"{where}.{key}").items()}


def period_start(now: float, period: str) -> float:
    """Start (epoch seconds) of the budget period holding `now`: `rolling-<N>d` is the last N
    days; `day`, `week` (from Monday) and `month` are calendar periods in UTC."""
    if period.startswith("rolling-") and period.endswith("d"):
        days = period[len("rolling-"):-1]
        if days.isdigit() and int(days) > 0:
            return now - int(days) * 86400.0
    elif period in ("day", "week", "month"):
        t = dt.datetime.fromtimestamp(now, dt.UTC)
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "week":
            start -= dt.timedelta(days=start.weekday())
        elif period == "month":
            start = start.replace(day=1)
        return start.timestamp()
    raise ConfigError(f"limits.yaml: scheduling.budget_period {period!r} is not rolling-<N>d, day, week or month")


def exhausted(used_hours: Mapping[str, float], budgets: Mapping[str, float]) -> frozenset[str]:
    """Names whose GPU-hours in the period reached their budget."""
    return frozenset(name for name, budget in budgets.items() if used_hours.get(name, 0.0) >= budget)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"limits.yaml: {where} must be a mapping, not {value!r}")
    return value


def _mode(value: Any, where: str) -> OverQuota:
    try:
        return OverQuota(value)
    except ValueError:
        raise ConfigError(f"limits.yaml: {where}: {value!r} is not reject or queue") from None


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"limits.yaml: {where} must be an integer, not {value!r}")
    return value


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        kind = "a positive number" if positive else "a non-negative number"
        raise ConfigError(f"limits.yaml: {where} must be {kind}, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class BudgetQuery:
    """What the store reads for a launch whose owner or team has a GPU-hour budget."""

    since: float
    """Start of the current budget period."""
    user: str
    team: str
    user_budget: float | None
    team_budget: float | None


def budget_query(scheduling: Scheduling, owner: str, team: str, now: float) -> BudgetQuery | None:
    """The budgets that apply to a launch by `owner` for `team`; None when neither has one."""
    user_budget = scheduling.user_budgets.get(owner)
    team_budget = scheduling.team_budgets.get(team) if team else None
    if user_budget is None and team_budget is None:
        return None
    return BudgetQuery(period_start(now, scheduling.budget_period), owner, team, user_budget, team_budget)


def spent_budgets(query: BudgetQuery, user_hours: float, team_hours: float) -> tuple[str, ...]:
    """Descriptions of the budgets `query` names that the GPU-hours used this period reached."""
    spent = []
    if query.user_budget is not None and user_hours >= query.user_budget:
        spent.append(f"user {query.user} ({user_hours:.1f} of {query.user_budget:g} GPU-hours)")
    if query.team_budget is not None and team_hours >= query.team_budget:
        spent.append(f"team {query.team} ({team_hours:.1f} of {query.team_budget:g} GPU-hours)")
    return tuple(spent)


def effective_priority(priority_class: str, role: str, *, values: Mapping[str, int],
                       allowed: Mapping[str, frozenset[str] | None]) -> int:
    """The priority a workload queues with: its class's value when its role may use that
    class (`allowed[role]` None means any class), else the default (0)."""
    permitted = allowed.get(role)
    if permitted is not None and priority_class not in permitted:
        return 0
    return values.get(priority_class, 0)
