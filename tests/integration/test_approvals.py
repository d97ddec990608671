"""Two-person approvals and break-glass grants through the admission webhook (in-process),
on SQLite and once on PostgreSQL (tests/postgres_server.py)."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, INTERN, LEAD, RESEARCHER, delete_review, make_job, make_pod, make_pytorchjob, review
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures

from gateway.admission.approvals import review_refusal
from gateway.admission.policy import Policy
from gateway.admission.ports import Actor, NewApproval, NewGrant
from gateway.audit.records import is_break_glass
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.approvals import StateConflict
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sql import Ledger
from gateway.store.sqlite import SQLiteStore

OTHER_LEAD = ("gpu-leads", "team:nlp")
NLP_RESEARCHER = ("gpu-researchers", "team:nlp")
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service_on(store: Any, policy_dir: Path, clock: Clock) -> AdmissionService:
    return AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=clock)


def answer(service: AdmissionService, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = service.validate(body)["response"]
    return out


def big_launch() -> dict[str, Any]:
    """A 32-GPU PyTorchJob: over an intern's 8-GPU workload limit and 16-GPU quota."""
    return make_pytorchjob(workers=3, gpus=8).named("research", "llm-400b").obj()


def ask(store: Store, clock: Clock, *, user: str = "alice", groups: tuple[str, ...] = INTERN, action: str = "launch",
        kind: str = "pytorchjob", name: str = "llm-400b", gpus: int = 32, expires_in_s: float = 3600) -> str:
    teams = tuple(g.removeprefix("team:") for g in groups if g.startswith("team:"))
    new = NewApproval(action, kind, "research", name, gpus, "paper deadline", expires_in_s, teams)
    approval: dict[str, Any] = store.create_approval(new, Actor(user, groups, ""), now=clock())
    assert approval["state"] == "pending"
    return str(approval["id"])


def approve(store: Store, clock: Clock, approval_id: str, by: str = "erin") -> None:
    done = store.review_approval(approval_id, "approved", Actor(by, LEAD, "lead"), "ok", now=clock())
    assert done["state"] == "approved"


def approval_flow(store: Store, service: AdmissionService, clock: Clock) -> str:
    """Denied without an approval, allowed once with it, denied again after use; the approval's id."""
    denied = answer(service, review(big_launch(), user="alice", groups=INTERN).body())
    assert not denied["allowed"] and "may launch at most 8 GPUs" in denied["status"]["message"]
    approval_id = ask(store, clock)
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]  # pending
    approve(store, clock, approval_id)
    assert answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    assert store.approval(approval_id, now=clock())["state"] == "used"  # type: ignore[index]
    assert answer(service, delete_review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    again = answer(service, review(big_launch(), user="alice", groups=INTERN).body())
    assert not again["allowed"] and "may launch at most 8 GPUs" in again["status"]["message"]
    return approval_id


def test_an_approval_lifts_a_denial_once(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    approval_id = approval_flow(store, service, clock)
    rows = list(store.audit_rows())
    [used] = [r for r in rows if r["rule"] == "approval" and r["action"] == "launch"]
    assert used["decision"] == "allowed" and approval_id in used["reason"] and "workload-gpu-limit" in used["reason"]
    states = [(c["old"], c["new"]) for r in rows if r["action"] == "approval" for c in r["changes"]]
    assert states == [("", "pending"), ("pending", "approved"), ("approved", "used")]
    assert store.verify().ok


def test_an_approval_binds_person_object_and_size(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    approve(store, clock, ask(store, clock, gpus=24))  # fewer GPUs than the job asks for
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    approve(store, clock, ask(store, clock, user="carol"))  # another person's approval
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    approve(store, clock, ask(store, clock, kind="Job"))  # another kind
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    approve(store, clock, ask(store, clock, kind="PyTorchJob"))
    assert answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]


def test_an_expired_approval_lifts_nothing(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    approval_id = ask(store, clock, expires_in_s=60)
    approve(store, clock, approval_id)
    clock.now += 61
    assert not answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
    assert store.approval(approval_id, now=clock())["state"] == "expired"  # type: ignore[index]


def test_who_may_approve(policy: Policy) -> None:
    alice = policy.identity("alice", INTERN)
    assert "a different person must approve" in (review_refusal(policy, alice, "alice", ["vision"]) or "")
    assert review_refusal(policy, policy.identity("carol", INTERN), "alice", ["vision"]) is not None
    other_lead = review_refusal(policy, policy.identity("dave", OTHER_LEAD), "alice", ["vision"])
    assert other_lead is not None and "another team's" in other_lead
    assert review_refusal(policy, policy.identity("erin", LEAD), "alice", ["vision"]) is None
    assert review_refusal(policy, policy.identity("root", ADMIN), "alice", ["vision"]) is None
    root = policy.identity("root", ADMIN)
    assert review_refusal(policy, root, "root", []) is not None  # admins neither


def test_second_person_for_an_admin_launching_6144_gpus(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    job = make_job(gpus=8, parallelism=768).named("research", "huge").obj()
    denied = answer(service, review(job, user="root", groups=ADMIN).body())
    assert not denied["allowed"] and "needs a second person's approval" in denied["status"]["message"]
    approval_id = ask(store, clock, user="root", groups=ADMIN, kind="Job", name="huge", gpus=6144)
    approve(store, clock, approval_id, by="ops")
    assert answer(service, review(job, user="root", groups=ADMIN).body())["allowed"]
    [row] = [r for r in store.audit_rows() if r["action"] == "launch" and r["decision"] == "allowed"]
    assert row["rule"] == "approval" and "second-person" in row["reason"]


def test_break_glass_grant_is_used_then_expires(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    job = make_job(gpus=8, parallelism=8).named("research", "bobs").obj()
    assert answer(service, review(job, user="bob", groups=RESEARCHER).body())["allowed"]
    kill = delete_review(job, user="carol", groups=INTERN)
    assert not answer(service, kill.body())["allowed"]
    grant = store.create_grant(NewGrant("carol", "lead", "bob is away and the job is stuck", 60),
                               Actor("root", ADMIN, "admin"), now=clock())
    clock.now += 1  # past the service's one-second cache of grants
    assert answer(service, delete_review(job, user="carol", groups=INTERN).body())["allowed"]
    assert answer(service, review(job, user="bob", groups=RESEARCHER).body())["allowed"]
    clock.now += 60
    assert not answer(service, delete_review(job, user="carol", groups=INTERN).body())["allowed"]
    marked = [r for r in store.audit_rows() if is_break_glass(r)]
    expected = [("grant", "root"), ("kill", "carol"), ("grant", "gpu-gateway")]
    assert [(r["action"], r["user"]) for r in marked] == expected
    assert grant["id"] in marked[1]["reason"] and marked[1]["role"] == "lead"
    assert [c["new"] for c in marked[2]["changes"]] == ["expired"]
    assert store.grants(now=clock())[0]["state"] == "expired"


# ------------------------------------------------------------------ actions on someone's workload


def bobs_job(service: AdmissionService, name: str = "bobs-run") -> dict[str, Any]:
    """A job of bob's (researcher, team nlp), admitted and in the ledger."""
    job = make_job(gpus=8).named("research", name).obj()
    assert answer(service, review(job, user="bob", groups=NLP_RESEARCHER).body())["allowed"]
    return job


def alice_kills(service: AdmissionService, job: dict[str, Any]) -> dict[str, Any]:
    return answer(service, delete_review(job, user="alice", groups=INTERN).body())


def reassign(service: AdmissionService, job: dict[str, Any], owner: str, team: str) -> dict[str, Any]:
    """An admin gives the job to `owner` in `team`; the object as it is now."""
    moved = copy.deepcopy(job)
    moved["metadata"].setdefault("annotations", {}).update({"gpu-gateway.io/owner": owner, "gpu-gateway.io/team": team})
    body = review(moved, user="root", groups=ADMIN, operation="UPDATE", old=job).body()
    assert answer(service, body)["allowed"]
    return moved


def kill_flow(store: Store, service: AdmissionService, clock: Clock) -> None:
    """alice (intern, vision) may kill bob's (nlp) job once the owner's lead approved it."""
    job = bobs_job(service)
    denied = alice_kills(service, job)
    assert not denied["allowed"] and "belongs to bob (team nlp)" in denied["status"]["message"]
    approval_id = ask(store, clock, action="kill", kind="Job", name="bobs-run", gpus=0)
    row = store.approval(approval_id, now=clock())
    assert row is not None and (row["target_owner"], row["target_team"]) == ("bob", "nlp")
    approve(store, clock, approval_id, by="nate")
    assert alice_kills(service, job)["allowed"]
    assert store.approval(approval_id, now=clock())["state"] == "used"  # type: ignore[index]
    requested = next(r for r in store.audit_rows() if r["object_uid"] == approval_id)
    assert "(bob's (team nlp) workload)" in requested["reason"]


def test_an_approval_to_kill_records_the_owner_and_lifts_the_ownership_denial(
        store: Store, policy_dir: Path, clock: Clock) -> None:
    kill_flow(store, service_on(store, policy_dir, clock), clock)
    assert store.verify().ok


def test_a_launchs_approval_records_no_owner(store: Store, clock: Clock) -> None:
    row = store.approval(ask(store, clock), now=clock())
    assert row is not None and (row["target_owner"], row["target_team"]) == (None, None)


def test_a_workload_reassigned_before_approval_cannot_be_approved(store: Store, policy_dir: Path,
                                                                   clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    job = bobs_job(service)
    approval_id = ask(store, clock, action="kill", kind="Job", name="bobs-run", gpus=0)
    reassign(service, job, "carol", "vision")
    with pytest.raises(StateConflict, match=r"now carol's \(team vision\) workload, not bob's \(team nlp\)"):
        approve(store, clock, approval_id, by="nate")
    assert store.approval(approval_id, now=clock())["state"] == "pending"  # type: ignore[index]


def test_a_workload_reassigned_after_approval_is_not_killed_with_it(store: Store, policy_dir: Path,
                                                                     clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    job = bobs_job(service)
    approval_id = ask(store, clock, action="kill", kind="Job", name="bobs-run", gpus=0)
    approve(store, clock, approval_id, by="nate")  # nate, lead of nlp: bob's job
    moved = reassign(service, job, "carol", "vision")  # now carol's: nate has no say over it
    denied = alice_kills(service, moved)
    assert not denied["allowed"] and "belongs to carol" in denied["status"]["message"]
    assert store.approval(approval_id, now=clock())["state"] == "approved"  # type: ignore[index]
    back = reassign(service, moved, "bob", "nlp")  # bob's again: what nate approved
    assert alice_kills(service, back)["allowed"]


def test_the_kind_names_the_ledgers_record_in_any_form(store: Store, policy_dir: Path, clock: Clock) -> None:
    service = service_on(store, policy_dir, clock)
    bobs_job(service, "j")
    pod = make_pod(gpus=1).named("research", "j").obj()  # another object of the same name: alice's pod
    assert answer(service, review(pod, user="alice", groups=INTERN).body())["allowed"]
    for kind, owner in (("Job", "bob"), ("jobs", "bob"), ("jobs.batch", "bob"), ("Pod", "alice"), ("pods", "alice"),
                        ("PyTorchJob", "")):
        row = store.approval(ask(store, clock, user="erin", groups=LEAD, action="exec", kind=kind, name="j", gpus=0),
                             now=clock())
        assert row is not None and row["target_owner"] == owner, kind


def test_a_state_file_of_an_earlier_version_gains_the_columns(tmp_path: Path, policy_dir: Path,
                                                              clock: Clock) -> None:
    """Approvals asked for before owners were recorded: a kill one cannot be approved nor used (it
    was reviewed by the old rule); a launch one works as before."""
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    service = service_on(store, policy_dir, clock)
    job = bobs_job(service)
    pending = ask(store, clock, action="kill", kind="Job", name="bobs-run", gpus=0)
    approved = ask(store, clock, action="kill", kind="Job", name="bobs-run", gpus=0)
    approve(store, clock, approved, by="nate")
    launch = ask(store, clock)
    approve(store, clock, launch)
    store.close()
    with sqlite3.connect(path) as db:
        for column in ("target_owner", "target_team"):
            db.execute(f"ALTER TABLE approvals DROP COLUMN {column}")
        db.execute("DROP TABLE schema_versions")  # an earlier version kept no schema versions
    store = SQLiteStore(path)
    try:
        service = service_on(store, policy_dir, clock)
        assert store.approval(pending, now=clock())["target_owner"] is None  # type: ignore[index]
        with pytest.raises(StateConflict, match="ask for a new approval"):
            approve(store, clock, pending, by="nate")
        assert not alice_kills(service, job)["allowed"]
        assert store.approval(approved, now=clock())["state"] == "approved"  # type: ignore[index]
        assert answer(service, review(big_launch(), user="alice", groups=INTERN).body())["allowed"]
        assert store.verify().ok
    finally:
        store.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:  # noqa: F811
    s = PostgresStore(pg_url)
    yield s
    s.close()


def test_the_approval_flow_on_postgres(pg_store: PostgresStore, policy_dir: Path, clock: Clock) -> None:
    service = service_on(pg_store, policy_dir, clock)
    approval_flow(pg_store, service, clock)
    grant = pg_store.create_grant(NewGrant("carol", "lead", "incident", 60), Actor("root", ADMIN, "admin"),
                                  now=clock())
    assert pg_store.revoke_grant(grant["id"], Actor("root", ADMIN, "admin"), now=clock())["state"] == "revoked"
    assert pg_store.live_grants(now=clock()) == ()
    assert pg_store.verify().ok


def drop_target_columns(ledger: Ledger) -> None:
    for column in ("target_owner", "target_team"):
        ledger.db.run(f"ALTER TABLE approvals DROP COLUMN {column}")
    ledger.db.run("DROP TABLE schema_versions")  # an earlier version kept no schema versions


def test_the_kill_flow_on_postgres_and_its_upgrade(pg_url: str, policy_dir: Path, clock: Clock) -> None:  # noqa: F811
    store = PostgresStore(pg_url)
    try:
        kill_flow(store, service_on(store, policy_dir, clock), clock)
        store._write(drop_target_columns)
    finally:
        store.close()
    store = PostgresStore(pg_url)  # an earlier version's database gains the columns
    try:
        assert [(r["target_owner"], r["state"]) for r in store.approvals(now=clock())] == [(None, "used")]
        assert store.verify().ok
    finally:
        store.close()
