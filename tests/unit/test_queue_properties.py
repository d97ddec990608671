"""Properties of the queue core (gateway.scheduling.queue), checked against rules written here."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.admission.scheduling_settings import effective_priority
from gateway.scheduling.queue import Caps, Waiting, plan_release

PROPERTIES = settings(max_examples=400, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])
USERS = ["alice", "bob", "carol", "dan"]
TEAMS = ["vision", "nlp", ""]
ROLES = ["intern", "researcher", "lead"]


def team_of(user: str) -> str:
    return {"alice": "vision", "bob": "vision", "carol": "nlp", "dan": ""}[user]


@st.composite
def waiting_sets(draw: st.DrawFn, max_size: int = 12) -> list[Waiting]:
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        user = draw(st.sampled_from(USERS))
        pods = draw(st.integers(1, 8))
        out.append(Waiting(
            key=f"jobs/ns/w{i}", owner=user, team=team_of(user), role=draw(st.sampled_from(ROLES)),
            gpus=pods * draw(st.sampled_from([0, 1, 2, 4, 8])), pods=pods,
            priority=draw(st.sampled_from([0, 0, 10, 100])), arrival=float(draw(st.integers(0, 100))),
        ))
    return out


@st.composite
def cap_sets(draw: st.DrawFn) -> Caps:
    opt = st.one_of(st.none(), st.integers(0, 64))
    return Caps(
        user_used={u: draw(st.integers(0, 40)) for u in USERS},
        team_used={t: draw(st.integers(0, 60)) for t in TEAMS if t},
        role_user_caps={r: draw(opt) for r in ROLES},
        team_caps={t: c for t in TEAMS if t and (c := draw(opt)) is not None},
        default_team_cap=draw(opt),
        capacity=draw(st.one_of(st.none(), st.integers(0, 256))),
        cluster_used=draw(st.integers(0, 100)),
        exhausted_users=frozenset(draw(st.sets(st.sampled_from(USERS), max_size=1))),
        exhausted_teams=frozenset(draw(st.sets(st.sampled_from(["vision", "nlp"]), max_size=1))),
        team_shares={"vision": draw(st.sampled_from([0.5, 1.0, 3.0]))},
    )


def drawn_caps(w: Waiting, caps: Caps) -> list[tuple[tuple[str, str], int, int]]:
    """(cap, value, used before the pass) of every finite cap `w` draws from, written independently."""
    out = []
    if caps.role_user_caps.get(w.role) is not None:
        out.append((("user", w.owner), caps.role_user_caps[w.role], caps.user_used.get(w.owner, 0)))
    team_cap = caps.team_caps.get(w.team, caps.default_team_cap) if w.team else None
    if team_cap is not None:
        out.append((("team", w.team), team_cap, caps.team_used.get(w.team, 0)))
    if caps.capacity is not None:
        out.append((("cluster", ""), caps.capacity, caps.cluster_used))
    return out


@PROPERTIES
@given(waiting_sets(), cap_sets(), st.integers(0, 200), st.one_of(st.none(), st.integers(0, 60)))
def test_releases_never_exceed_a_cap_and_never_split_a_gang(waiting, caps, now, limit) -> None:
    plan = plan_release(waiting, caps, now=float(now), wait_limit_s=limit)
    by_key = {w.key: w for w in waiting}
    # Every waiting workload is either released whole (exactly as it waited) or held, once.
    assert sorted([*plan.released_keys, *(h.key for h in plan.held)]) == sorted(by_key)
    assert all(by_key[w.key] == w for w in plan.released)
    assert [h.position for h in plan.held] == list(range(1, len(plan.held) + 1))
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for w in plan.released:
        assert w.owner not in caps.exhausted_users
        assert not (w.team and w.team in caps.exhausted_teams)
        for cap_key, cap, used in drawn_caps(w, caps) if w.gpus else ():  # asking for none never breaks a cap
            prev = totals.get(cap_key, (cap, used))
            totals[cap_key] = (cap, prev[1] + w.gpus)
    for cap_key, (cap, used) in totals.items():
        assert used <= cap, f"{cap_key} ends at {used} of {cap}"


@PROPERTIES
@given(waiting_sets(), cap_sets(), st.integers(0, 200), st.integers(0, 60))
def test_nothing_takes_the_room_a_reserved_workload_waits_for(waiting, caps, now, limit) -> None:
    plan = plan_release(waiting, caps, now=float(now), wait_limit_s=limit)
    by_key = {w.key: w for w in waiting}
    reserved = [by_key[h.key] for h in plan.held if h.reserved]
    if not reserved:
        return
    first = reserved[0]
    starving = {w.key for w in waiting if now - w.arrival > limit}
    assert first.key in starving
    # Workloads released although they had not waited past the limit left room for `first`
    # on every cap they share with it.
    for cap_key, cap, used in drawn_caps(first, caps):
        later = [w for w in plan.released if w.key not in starving and w.gpus > 0
                 and any(k == cap_key for k, _, _ in drawn_caps(w, caps))]
        if later:
            total = used + sum(w.gpus for w in plan.released if any(k == cap_key for k, _, _ in drawn_caps(w, caps)))
            assert total + first.gpus <= cap


@PROPERTIES
@given(st.lists(st.tuples(st.sampled_from(USERS), st.integers(1, 4)), min_size=1, max_size=60),
       st.integers(8, 64), st.integers(1, 5), st.integers(1, 10))
def test_a_large_workload_is_not_overtaken_forever(arrivals, capacity, limit, per_pass) -> None:
    """One 8-pod gang (capacity GPUs) and a stream of small ones, all one priority: every
    pass the work released in the previous pass keeps running. The gang starts at most
    one pass after it has waited past the limit."""
    caps_base = Caps(role_user_caps={"researcher": None}, capacity=capacity)
    big = Waiting("jobs/ns/big", "alice", "vision", "researcher", gpus=capacity, pods=8, arrival=0.0)
    queue = [big]
    running: list[Waiting] = []
    stream = iter(arrivals)
    for p in range(limit + 3):
        for i in range(per_pass):
            nxt = next(stream, None)
            if nxt is not None:
                user, gpus = nxt
                queue.append(Waiting(f"jobs/ns/s{p}-{i}", user, team_of(user), "researcher", gpus, 1,
                                     arrival=float(p)))
        used = sum(w.gpus for w in running)
        caps = Caps(role_user_caps=caps_base.role_user_caps, capacity=capacity, cluster_used=used)
        plan = plan_release(queue, caps, now=float(p), wait_limit_s=limit)
        assert used + sum(w.gpus for w in plan.released) <= capacity
        if big.key in plan.released_keys:
            assert p <= limit + 2
            return
        queue = [w for w in queue if w.key not in plan.released_keys]
        running = list(plan.released)  # the previous pass's work finished; this pass's runs
    raise AssertionError("the large gang was overtaken past the wait limit")


def test_priority_first_then_fair_share_then_arrival() -> None:
    caps = Caps(team_used={"vision": 30, "nlp": 10}, team_shares={"vision": 2.0}, capacity=1000)
    waiting = [
        Waiting("jobs/ns/v-early", "alice", "vision", "researcher", 8, 1, arrival=1.0),
        Waiting("jobs/ns/n-late", "carol", "nlp", "researcher", 8, 1, arrival=5.0),
        Waiting("jobs/ns/urgent", "bob", "vision", "researcher", 8, 1, priority=100, arrival=9.0),
    ]
    plan = plan_release(waiting, caps, now=10.0, wait_limit_s=None)
    # vision: 30/2 = 15 > nlp 10/1: nlp first at equal priority; after it nlp is at 18 > 15.
    assert [w.key for w in plan.released] == ["jobs/ns/urgent", "jobs/ns/n-late", "jobs/ns/v-early"]


def test_held_workloads_say_why_and_where() -> None:
    caps = Caps(role_user_caps={"intern": 16}, user_used={"alice": 12}, capacity=100, cluster_used=90)
    waiting = [
        Waiting("jobs/ns/a", "alice", "vision", "intern", 8, 2, arrival=1.0),
        Waiting("jobs/ns/b", "carol", "nlp", "intern", 32, 4, arrival=2.0),
        Waiting("jobs/ns/c", "carol", "nlp", "intern", 8, 1, arrival=3.0),
    ]
    plan = plan_release(waiting, caps, now=4.0, wait_limit_s=None)
    assert [w.key for w in plan.released] == ["jobs/ns/c"]
    held = {h.key: h for h in plan.held}
    assert held["jobs/ns/a"].position == 1 and "user alice holds 12 of 16" in held["jobs/ns/a"].reason
    assert held["jobs/ns/b"].impossible and "more than the user carol cap of 16" in held["jobs/ns/b"].reason


def test_a_reserved_workload_holds_its_gpus_back() -> None:
    caps = Caps(capacity=64, cluster_used=40)
    big = Waiting("jobs/ns/big", "alice", "vision", "researcher", 32, 4, arrival=0.0)
    small = Waiting("jobs/ns/small", "bob", "vision", "researcher", 8, 1, arrival=50.0)
    assert plan_release([big, small], caps, now=55.0, wait_limit_s=None).released_keys == {"jobs/ns/small"}
    plan = plan_release([big, small], caps, now=55.0, wait_limit_s=30)
    assert plan.released_keys == frozenset()
    assert plan.held[0].reserved and "held" in plan.held[0].reason


def test_a_workload_over_a_cap_on_its_own_reserves_nothing() -> None:
    caps = Caps(capacity=16)
    huge = Waiting("jobs/ns/huge", "alice", "vision", "researcher", 64, 8, arrival=0.0)
    small = Waiting("jobs/ns/small", "bob", "vision", "researcher", 8, 1, arrival=50.0)
    plan = plan_release([huge, small], caps, now=100.0, wait_limit_s=10)
    assert plan.released_keys == {"jobs/ns/small"}
    assert plan.held[0].impossible


def test_a_priority_class_the_role_may_not_use_counts_as_default() -> None:
    values = {"high": 1000, "low": -10}
    allowed = {"intern": frozenset({"", "low"}), "lead": None}
    assert effective_priority("high", "intern", values=values, allowed=allowed) == 0
    assert effective_priority("low", "intern", values=values, allowed=allowed) == -10
    assert effective_priority("high", "lead", values=values, allowed=allowed) == 1000
    assert effective_priority("unknown", "lead", values=values, allowed=allowed) == 0
