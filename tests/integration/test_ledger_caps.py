"""The ledger never lets a user or a team hold more GPUs than their cap, whatever the order of
launches, scales and deletes, and whoever runs them at the same time.

A hypothesis state machine drives AdmissionService.validate against a real SQLite store and
keeps its own model of what should be running; several threads and processes then race for
the same caps through separate connections to one state file.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import POLICIES, delete_review, make_deployment, make_job, review
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from gateway.admission.quota import Usage
from gateway.audit.ports import VerifyResult
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

# ------------------------------------------------------------------ the capped policy

#: role -> (max_gpus_per_workload, max_concurrent_gpus); None is unlimited.
ROLE_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "intern": (8, 16), "researcher": (24, 32), "lead": (4096, None),
}
TEAM_CAPS = {"vision": 40, "nlp": 24}

PEOPLE: dict[str, tuple[str, ...]] = {
    "alice": ("gpu-interns", "team:vision"),
    "ann": ("gpu-interns", "team:vision"),
    "bob": ("gpu-researchers", "team:vision"),
    "carol": ("gpu-interns", "team:nlp"),
    "dave": ("gpu-researchers", "team:nlp"),
    "erin": ("gpu-researchers", "team:nlp", "team:vision"),
    "lena": ("gpu-leads", "team:vision"),
}
ROLE = {user: groups[0].removeprefix("gpu-").removesuffix("s") for user, groups in PEOPLE.items()}
TEAMS = {user: sorted(g.removeprefix("team:") for g in groups if g.startswith("team:"))
         for user, groups in PEOPLE.items()}


def write_capped_policies(target: Path) -> Path:
    """A copy of the bundled policies with small caps: interns 8/16, researchers 24/32, teams."""
    shutil.copytree(POLICIES, target)
    limits_file = target / "limits.yaml"
    limits = yaml.safe_load(limits_file.read_text())
    limits["roles"]["researcher"] = {"max_gpus_per_workload": 24, "max_concurrent_gpus": 32}
    limits["teams"] = {team: {"max_concurrent_gpus": cap} for team, cap in TEAM_CAPS.items()}
    limits_file.write_text(yaml.safe_dump(limits))
    return target


@pytest.fixture(scope="module")
def capped_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_capped_policies(tmp_path_factory.mktemp("capped") / "policies")


def test_the_capped_policy_is_what_the_model_assumes(capped_policies):
    policy = PolicyHolder(capped_policies).policy
    for role, (per_workload, concurrent) in ROLE_LIMITS.items():
        limits = policy.role_limits(role)
        assert (limits.max_gpus_per_workload, limits.max_concurrent_gpus) == (per_workload, concurrent)
    assert {t: policy.team_cap(t) for t in TEAM_CAPS} == TEAM_CAPS
    for user, groups in PEOPLE.items():
        ident = policy.identity(user, groups)
        assert (ident.role, list(ident.teams)) == (ROLE[user], TEAMS[user])


# ------------------------------------------------------------------ requests


def scale_body(name: str, old: int, new: int, user: str) -> dict[str, Any]:
    def scale(n: int) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": "research"}, "spec": {"replicas": n}}

    return review(scale(new), old=scale(old), user=user, groups=PEOPLE[user], operation="UPDATE",
                  sub_resource="scale", kind=("autoscaling", "v1", "Scale"),
                  resource=("apps", "deployments")).body()


@dataclass
class Workload:
    name: str
    kind: str
    """`deployment` (scalable) or `job`."""
    owner: str
    team: str
    each: int
    replicas: int

    @property
    def gpus(self) -> int:
        return self.each * self.replicas

    def obj(self) -> dict[str, Any]:
        if self.kind == "deployment":  # Recreate: no rolling-update surge, so GPUs are each x replicas
            dep = make_deployment(gpus=self.each, replicas=self.replicas).named("research", self.name).obj()
            dep["spec"]["strategy"] = {"type": "Recreate"}
            return dep
        return make_job(gpus=self.each, parallelism=self.replicas).named("research", self.name).obj()


# ------------------------------------------------------------------ the state machine

EDGE = st.none() | st.sampled_from([-1, 0, 1])
"""None: sizes at random; otherwise ask for exactly what is left, plus this."""


class LedgerMachine(RuleBasedStateMachine):
    """Random launches, scales and deletes; the model predicts every decision."""

    policy_dir: Path

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-"))
        self.store = SQLiteStore(self.dir / "state.db", synchronous="OFF")
        self.service = AdmissionService(PolicyHolder(self.policy_dir), self.store, metrics=Metrics())
        self.model: dict[str, Workload] = {}
        self.requests = 0
        self.names = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------- the model's arithmetic

    def used(self, *, owner: str | None = None, team: str | None = None, but: str = "") -> int:
        return sum(w.gpus for w in self.model.values()
                   if w.name != but and (owner is None or w.owner == owner) and (team is None or w.team == team))

    def fits(self, gpus: int, *, owner: str, team: str, owner_role: str, requester: str, but: str = "") -> bool:
        """Whether `gpus` fit the owner's limits, whoever (`requester`) asks: the owner's role sets
        both the per-workload limit and the concurrent cap."""
        per_workload = ROLE_LIMITS[owner_role][0]
        user_cap = ROLE_LIMITS[owner_role][1]
        return (
            (per_workload is None or gpus <= per_workload)
            and (user_cap is None or self.used(owner=owner, but=but) + gpus <= user_cap)
            and self.used(team=team, but=but) + gpus <= TEAM_CAPS[team]
        )

    def room(self, *, owner: str, team: str, owner_role: str, requester: str, but: str = "") -> int:
        """The most GPUs one workload of `owner` could have now (what `fits` still allows)."""
        per_workload = ROLE_LIMITS[owner_role][0]
        user_cap = ROLE_LIMITS[owner_role][1]
        rooms = [TEAM_CAPS[team] - self.used(team=team, but=but)]
        if per_workload is not None:
            rooms.append(per_workload)
        if user_cap is not None:
            rooms.append(user_cap - self.used(owner=owner, but=but))
        return max(min(rooms), 0)

    @staticmethod
    def may_touch(user: str, w: Workload) -> bool:
        return user == w.owner or (ROLE[user] == "lead" and w.team in TEAMS[user])

    def send(self, body: dict[str, Any]) -> bool:
        self.requests += 1
        resp = self.service.validate(body)["response"]
        assert resp.get("status", {}).get("code") != 500, resp
        return bool(resp["allowed"])

    # -------------------------------------------------------- rules

    @rule(user=st.sampled_from(sorted(PEOPLE)), kind=st.sampled_from(["deployment", "job"]),
          each=st.integers(1, 8), replicas=st.integers(1, 4), edge=EDGE, choose_team=st.booleans(),
          dry_run=st.booleans())
    def launch(self, user: str, kind: str, each: int, replicas: int, edge: int | None, choose_team: bool,
               dry_run: bool) -> None:
        self.names += 1
        team = TEAMS[user][-1] if choose_team else TEAMS[user][0]
        if edge is not None:  # exactly what is left, one less or one more, in one pod
            each, replicas = max(self.room(owner=user, team=team, owner_role=ROLE[user], requester=user) + edge, 1), 1
        w = Workload(f"w{self.names}", kind, user, team, each, replicas)
        obj = w.obj()
        if choose_team:
            obj["metadata"].setdefault("annotations", {})["gpu-gateway.io/team"] = team
        expected = self.fits(w.gpus, owner=user, team=team, owner_role=ROLE[user], requester=user)
        allowed = self.send(review(obj, user=user, groups=PEOPLE[user], dry_run=dry_run).body())
        assert allowed == expected, (w, self.model)
        if allowed and not dry_run:
            self.model[w.name] = w

    @precondition(lambda self: any(w.kind == "deployment" for w in self.model.values()))
    @rule(data=st.data(), replicas=st.integers(0, 6), edge=EDGE, by_owner=st.booleans())
    def scale(self, data: st.DataObject, replicas: int, edge: int | None, by_owner: bool) -> None:
        w = self.model[data.draw(st.sampled_from(sorted(n for n, w in self.model.items() if w.kind == "deployment")))]
        user = w.owner if by_owner else data.draw(st.sampled_from(sorted(PEOPLE)))
        if edge is not None:  # as many replicas as fit, one less or one more
            room = self.room(owner=w.owner, team=w.team, owner_role=ROLE[w.owner], requester=user, but=w.name)
            replicas = max(room // w.each + edge, 0)
        new = w.each * replicas
        expected = self.may_touch(user, w) and (
            new <= w.gpus
            or self.fits(new, owner=w.owner, team=w.team, owner_role=ROLE[w.owner], requester=user, but=w.name)
        )
        allowed = self.send(scale_body(w.name, w.replicas, replicas, user))
        assert allowed == expected, (w, replicas, user, self.model)
        if allowed:
            w.replicas = replicas

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), by_owner=st.booleans())
    def delete(self, data: st.DataObject, by_owner: bool) -> None:
        w = self.model[data.draw(st.sampled_from(sorted(self.model)))]
        user = w.owner if by_owner else data.draw(st.sampled_from(sorted(PEOPLE)))
        allowed = self.send(delete_review(w.obj(), user=user, groups=PEOPLE[user]).body())
        assert allowed == self.may_touch(user, w), (w, user)
        if allowed:
            del self.model[w.name]

    # -------------------------------------------------------- invariants

    @invariant()
    def caps_hold_and_the_ledger_is_the_model(self) -> None:
        rows = self.store.reservations()
        assert {r.name: (r.owner, r.team, r.gpus) for r in rows} == {
            w.name: (w.owner, w.team, w.gpus) for w in self.model.values()}
        assert all(r.charged and r.role == ROLE[r.owner] for r in rows)
        per_user: Counter[str] = Counter()
        per_team: Counter[str] = Counter()
        for r in rows:
            per_user[r.owner] += r.gpus
            per_team[r.team] += r.gpus
        for user, used in per_user.items():
            cap = ROLE_LIMITS[ROLE[user]][1]
            assert cap is None or used <= cap, (user, used)
        for team, used in per_team.items():
            assert used <= TEAM_CAPS[team], (team, used)
        nonzero = {team: gpus for team, gpus in per_team.items() if gpus}
        assert {t: g for t, g in self.store.gpus_by_team().items() if g} == nonzero

    @invariant()
    def usage_seen_by_a_new_launch_is_the_models(self) -> None:
        key = ("jobs.batch", "research", "not-launched-yet")
        for user in PEOPLE:
            team = TEAMS[user][0]
            assert self.store.facts(key, user, team).usage == Usage(
                user=self.used(owner=user), team=self.used(team=team))

    @invariant()
    def every_request_is_audited_and_the_chain_verifies(self) -> None:
        assert self.store.verify() == VerifyResult(True, self.requests)


def test_random_launches_scales_and_deletes_never_break_a_cap(capped_policies):
    machine = type("Ledger", (LedgerMachine,), {"policy_dir": capped_policies})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True, database=None))


# ------------------------------------------------------------------ concurrency


def launch_many(state: str, policy_dir: str, user: str, names: list[str], gpus: int,
                start: Any) -> list[tuple[bool, int | None]]:
    """Open a store of our own on `state`, wait for the others, launch one Job per name."""
    groups = PEOPLE[user]
    try:
        store = SQLiteStore(state)
    except BaseException:
        start.abort()  # the others fail at once instead of waiting out the barrier
        raise
    try:
        try:
            service = AdmissionService(PolicyHolder(Path(policy_dir)), store, metrics=Metrics())
            bodies = [review(make_job(gpus=gpus).named("research", n).obj(), user=user, groups=groups).body()
                      for n in names]
        except BaseException:
            start.abort()
            raise
        start.wait(timeout=120)
        out = []
        for body in bodies:
            resp = service.validate(body)["response"]
            out.append((bool(resp["allowed"]), resp.get("status", {}).get("code")))
        return out
    finally:
        store.close()


def _launch_in_process(queue: Any, *args: Any) -> None:
    try:
        queue.put(launch_many(*args))
    except BaseException as exc:
        queue.put(repr(exc))


def ledger_after(state: Path) -> tuple[Counter[str], Counter[str], VerifyResult]:
    store = SQLiteStore(state)
    try:
        per_user: Counter[str] = Counter()
        per_team: Counter[str] = Counter()
        for r in store.reservations():
            per_user[r.owner] += r.gpus
            per_team[r.team] += r.gpus
        return per_user, per_team, store.verify()
    finally:
        store.close()


def prepared_state(tmp_path: Path) -> Path:
    """Create the schema once, before the racers open the file."""
    state = tmp_path / "state.db"
    SQLiteStore(state).close()
    return state


# (user, jobs each racer launches, GPUs per job): every racer asks for the same size, so
# exactly cap // size launches fit, whoever wins.
RACERS = [
    ("alice", 3, 8),   # intern, user cap 16: alice as a whole gets two jobs
    ("alice", 3, 8),
    ("ann", 2, 8),     # another vision intern
    ("bob", 2, 8),     # a vision researcher
    ("lena", 3, 8),    # the vision lead, no user cap: only the team cap of 40 stops her
    ("lena", 3, 8),
]


def check_race(state: Path, results: list[list[tuple[bool, int | None]]]) -> None:
    assert all(code != 500 for out in results for _, code in out), results
    per_user, per_team, verified = ledger_after(state)
    assert per_user["alice"] <= 16
    assert per_team["vision"] <= 40
    assert per_team["vision"] == 40  # asks were all 8 GPUs and far more than 40 were asked
    admitted = sum(ok for out in results for ok, _ in out)
    assert admitted * 8 == sum(per_user.values()) == 40
    asked = sum(n for _, n, _ in RACERS)
    assert verified == VerifyResult(True, asked)


def racer_names(i: int, n: int) -> list[str]:
    return [f"r{i}-{j}" for j in range(n)]


def test_threads_with_their_own_connections_never_together_break_a_cap(tmp_path, capped_policies):
    state = prepared_state(tmp_path)
    start = threading.Barrier(len(RACERS))
    results: list[list[tuple[bool, int | None]]] = [[] for _ in RACERS]

    errors: list[BaseException] = []

    def run(i: int, user: str, n: int, gpus: int) -> None:
        try:
            results[i] = launch_many(str(state), str(capped_policies), user, racer_names(i, n), gpus, start)
        except BaseException as exc:  # reported below, with the first cause rather than the barrier
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, *r)) for i, r in enumerate(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    causes = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    assert not errors, causes or errors
    check_race(state, results)


def test_processes_with_their_own_stores_never_together_break_a_cap(tmp_path, capped_policies):
    state = prepared_state(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(RACERS))
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_launch_in_process,
                    args=(queue, str(state), str(capped_policies), user, racer_names(i, n), gpus, start))
        for i, (user, n, gpus) in enumerate(RACERS)
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    failures = [r for r in results if isinstance(r, str)]
    assert not failures, failures
    assert all(p.exitcode == 0 for p in procs)
    check_race(state, results)


def test_one_shared_store_serialises_threads_too(service, store):
    """The conftest service: one store, many threads, the intern's cap of 16 holds."""
    start = threading.Barrier(6)
    answers: list[bool] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        body = review(make_job(gpus=8).named("research", f"t{i}").obj(), user="alice",
                      groups=PEOPLE["alice"]).body()
        start.wait(timeout=60)
        ok = service.validate(body)["response"]["allowed"]
        with lock:
            answers.append(ok)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(answers) == [False] * 4 + [True] * 2
    assert sum(r.gpus for r in store.reservations()) == 16
    assert store.verify() == VerifyResult(True, 6)


# ------------------------------------------------------------------ regressions (admission core)


def test_updating_a_cpu_deployment_to_use_gpus_counts_against_the_caps(service, store):
    intern = ("gpu-interns", "team:vision")
    for i in range(3):
        cpu = make_deployment(gpus=0, replicas=1).named("research", f"d{i}").obj()
        gpu = make_deployment(gpus=8, replicas=1).named("research", f"d{i}").obj()
        assert service.validate(review(cpu, user="alice", groups=intern).body())["response"]["allowed"]
        service.validate(review(gpu, old=cpu, user="alice", groups=intern, operation="UPDATE").body())
    assert sum(r.gpus for r in store.reservations() if r.owner == "alice") <= 16


def test_creating_a_name_that_exists_does_not_take_over_its_reservation(service, store):
    job = make_job(gpus=8).named("research", "train").obj()
    assert service.validate(review(job, user="bob", groups=PEOPLE["bob"]).body())["response"]["allowed"]
    service.validate(review(job, user="alice", groups=PEOPLE["alice"]).body())
    [row] = store.reservations()
    assert row.owner == "bob"
