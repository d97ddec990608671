"""The scheduler shim's queue: which waiting workloads to release now. Pure: no I/O, no clock.

A waiting workload is a gang: all its pods (or its configured minimum) are released
together or not at all. A pass (`plan_release`) takes the ledger's usage, the caps that
apply and the waiting set, and answers which workloads to release, and for the others
their position and why they wait.

Order (docs/scheduler.md):

1. Workloads that have waited longer than `wait_limit_s` ("reserved"), by priority then
   arrival. A reserved workload that does not fit holds its GPUs back on every cap it
   draws from, so nothing behind it (smaller or not) takes the room it waits for; it
   starts as soon as running work frees that room.
2. The others by priority (higher first), then fair share between teams, then arrival.
   Fair share: a team's *share ratio* is `(GPUs the team holds + GPUs released to it in
   this pass) / share`, where `share` is the team's weight (`scheduling.team_shares`,
   default 1); among workloads of equal priority the team with the lowest ratio goes
   first, ties broken by arrival, then by key. Ratios are recomputed after every release.

A workload is never released past a cap: per user (its role's concurrent cap), per team,
the cluster's capacity (GPU allocatable on nodes, less GPUs in use), and an exhausted
GPU-hour budget of its user or team blocks it. A workload larger than a cap on its own
can never start: it is reported `impossible` and reserves nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Waiting:
    """A workload waiting in the queue."""

    key: str
    """`resource/namespace/name` of the workload."""
    owner: str
    team: str
    role: str
    gpus: int
    """GPUs of the gang to release (all pods, or the configured minimum)."""
    pods: int
    priority: int = 0
    """Effective priority (a class the role may not use counts as 0)."""
    arrival: float = 0.0


@dataclass(frozen=True, slots=True)
class Caps:
    """The caps that apply, and what the ledger holds now (charged GPUs)."""

    user_used: Mapping[str, int] = field(default_factory=dict)
    team_used: Mapping[str, int] = field(default_factory=dict)
    role_user_caps: Mapping[str, int | None] = field(default_factory=dict)
    """Concurrent GPUs one user of each role may hold; a role absent or None is unlimited."""
    team_caps: Mapping[str, int] = field(default_factory=dict)
    default_team_cap: int | None = None
    capacity: int | None = None
    """GPU allocatable on the cluster's nodes; None when unknown (no cluster cap)."""
    cluster_used: int = 0
    """GPUs reserved in the whole ledger (every user)."""
    exhausted_users: frozenset[str] = frozenset()
    """Users whose GPU-hour budget for the period is spent."""
    exhausted_teams: frozenset[str] = frozenset()
    team_shares: Mapping[str, float] = field(default_factory=dict)
    """Fair-share weight per team (default 1)."""

    def user_cap(self, role: str) -> int | None:
        return self.role_user_caps.get(role)

    def team_cap(self, team: str) -> int | None:
        if not team:
            return None
        return self.team_caps.get(team, self.default_team_cap)

    def share(self, team: str) -> float:
        value = self.team_shares.get(team, 1.0)
        return value if value > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Held:
    """Why a workload is not released in this pass, and its place in the queue (1 = next)."""

    key: str
    position: int
    reason: str
    reserved: bool = False
    """It waited past the wait limit: its GPUs are held back on the caps it draws from."""
    impossible: bool = False
    """Larger than a cap on its own (or a budget is spent): it reserves nothing."""


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    released: tuple[Waiting, ...]
    """In release order."""
    held: tuple[Held, ...]
    """In queue order."""

    @property
    def released_keys(self) -> frozenset[str]:
        return frozenset(w.key for w in self.released)


# A cap is named by (scope, name): ("user", "alice"), ("team", "vision"), ("cluster", "").
CapKey = tuple[str, str]


class _Room:
    """Remaining room on every finite cap during a pass, less what reserved workloads hold."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self.used: dict[CapKey, int] = {}
        for user, n in caps.user_used.items():
            self.used[("user", user)] = n
        for team, n in caps.team_used.items():
            self.used[("team", team)] = n
        self.used[("cluster", "")] = caps.cluster_used
        self.held: dict[CapKey, int] = {}
        self.held_cap: dict[CapKey, int] = {}
        """The smallest value of a cap among the workloads holding GPUs on it: one user's
        workloads may carry different roles (and so user caps), and every hold must still fit
        under its own."""

    def limits(self, w: Waiting) -> list[tuple[CapKey, int]]:
        """The finite caps `w` draws from, with their values."""
        out: list[tuple[CapKey, int]] = []
        user_cap = self.caps.user_cap(w.role)
        if user_cap is not None:
            out.append((("user", w.owner), user_cap))
        team_cap = self.caps.team_cap(w.team)
        if team_cap is not None:
            out.append((("team", w.team), team_cap))
        if self.caps.capacity is not None:
            out.append((("cluster", ""), self.caps.capacity))
        return out

    def never_fits(self, w: Waiting) -> str:
        """Why `w` can never start as things are configured ("" when it can)."""
        if w.owner in self.caps.exhausted_users:
            return f"the GPU-hour budget of user {w.owner} is spent for this period"
        if w.team and w.team in self.caps.exhausted_teams:
            return f"the GPU-hour budget of team {w.team} is spent for this period"
        for cap_key, cap in self.limits(w):
            if w.gpus > cap:
                return f"it asks for {w.gpus} GPUs, more than the {_describe(cap_key)} cap of {cap}"
        return ""

    def blocker(self, w: Waiting) -> str:
        """The first cap `w` does not fit now, described ("" when it fits). Asking for no
        GPUs always fits, as in `quota.check_caps`."""
        if w.gpus <= 0:
            return ""
        for cap_key, cap in self.limits(w):
            used = self.used.get(cap_key, 0)
            held = self.held.get(cap_key, 0)
            if held:
                cap = min(cap, self.held_cap[cap_key])
            if used + held + w.gpus > cap:
                extra = f" and {held} are held for a workload that has waited longer" if held else ""
                return f"{_describe(cap_key)} holds {used} of {cap} GPUs{extra}; this asks for {w.gpus}"
        return ""

    def take(self, w: Waiting) -> None:
        drawn = {cap_key for cap_key, _ in self.limits(w)} | {("cluster", "")}
        for cap_key in drawn:
            self.used[cap_key] = self.used.get(cap_key, 0) + w.gpus

    def hold(self, w: Waiting) -> None:
        for cap_key, cap in self.limits(w):
            self.held[cap_key] = self.held.get(cap_key, 0) + w.gpus
            self.held_cap[cap_key] = min(cap, self.held_cap.get(cap_key, cap))


def _describe(cap_key: CapKey) -> str:
    scope, name = cap_key
    return "the cluster" if scope == "cluster" else f"{scope} {name}"


def plan_release(waiting: Iterable[Waiting], caps: Caps, *, now: float, wait_limit_s: float | None) -> ReleasePlan:
    """Decide which waiting workloads to release now, whole, in the documented order.

    Duplicate keys are a caller's error: only the first of each key is considered.
    """
    seen: set[str] = set()
    items: list[Waiting] = []
    for w in waiting:
        if w.key not in seen:
            seen.add(w.key)
            items.append(w)
    room = _Room(caps)
    released: list[Waiting] = []
    held: list[Held] = []

    def starving(w: Waiting) -> bool:
        return wait_limit_s is not None and now - w.arrival > wait_limit_s

    # 1. Reserved: waited past the limit, by priority then arrival.
    for w in sorted((w for w in items if starving(w)), key=lambda w: (-w.priority, w.arrival, w.key)):
        _consider(w, room, released, held, reserved=True)
    # 2. The rest: priority, then fair share between teams (recomputed after each release), then arrival.
    rest = [w for w in items if not starving(w)]
    by_level: dict[int, dict[str, list[Waiting]]] = {}
    for w in rest:
        by_level.setdefault(w.priority, {}).setdefault(w.team, []).append(w)
    team_load = {team: float(n) for team, n in caps.team_used.items()}
    for priority in sorted(by_level, reverse=True):
        queues = {team: sorted(ws, key=lambda w: (w.arrival, w.key)) for team, ws in by_level[priority].items()}
        heap = [(_ratio(team, team_load, caps), q[0].arrival, q[0].key, team, 0) for team, q in queues.items()]
        heapq.heapify(heap)
        while heap:
            _, _, _, team, index = heapq.heappop(heap)
            w = queues[team][index]
            if _consider(w, room, released, held, reserved=False):
                team_load[team] = team_load.get(team, 0.0) + w.gpus
            if index + 1 < len(queues[team]):
                nxt = queues[team][index + 1]
                heapq.heappush(heap, (_ratio(team, team_load, caps), nxt.arrival, nxt.key, team, index + 1))
    positions = [Held(h.key, i + 1, h.reason, h.reserved, h.impossible) for i, h in enumerate(held)]
    return ReleasePlan(tuple(released), tuple(positions))


def _ratio(team: str, load: Mapping[str, float], caps: Caps) -> float:
    return load.get(team, 0.0) / caps.share(team)


def _consider(w: Waiting, room: _Room, released: list[Waiting], held: list[Held], *, reserved: bool) -> bool:
    impossible = room.never_fits(w)
    if impossible:
        held.append(Held(w.key, 0, f"cannot start: {impossible}", impossible=True))
        return False
    blocked = room.blocker(w)
    if blocked:
        if reserved:
            room.hold(w)
            held.append(Held(w.key, 0, f"waiting past the wait limit, GPUs held for it: {blocked}", reserved=True))
        else:
            held.append(Held(w.key, 0, f"waiting for GPUs: {blocked}"))
        return False
    room.take(w)
    released.append(w)
    return True
