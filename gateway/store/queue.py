"""The queue in the store: waiting workloads, and one queue pass per transaction.

`QueueSQL` is mixed into both backends, which supply `_read` and `_write` (one transaction
under the backend's write lock; on PostgreSQL the advisory lock every ledger write takes).
A pass (`run_queue`) reads the usage counters and the waiting rows, lets the pure core
(gateway.scheduling.queue.plan_release) decide, and in the same transaction charges the released
workloads' reservations, drops the gangs whose pods did not all appear in time, records
every waiting row's position and reason, and writes an audit record for each release and
drop: admissions on other replicas can never slip between the decision and its writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from gateway.admission.decision import Decision, Reservation
from gateway.admission.plan import Target
from gateway.admission.ports import Actor, SettingChange
from gateway.admission.scheduling_settings import exhausted, period_start
from gateway.admission.shape import charges_children
from gateway.scheduling.ports import Limits, PassResult, QueueRow, split_key
from gateway.scheduling.queue import Caps, Held, ReleasePlan, Waiting, plan_release
from gateway.scheduling.reconcile import FORGET_GRACE_S, PodView, Repair, plan_reconcile
from gateway.scheduling.reconcile import Held as LedgerHeld
from gateway.scheduling.roots import unknown_roots
from gateway.store.migrations import Migration, Subject, statements
from gateway.store.settings import put_setting
from gateway.store.sql import ROOTS_LISTED, Ledger

#: The waiting workloads, in queue order.
QUEUE_SCHEMA = Subject("queue", (
    Migration(1, statements("""
CREATE TABLE IF NOT EXISTS queue (
    resource       TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    owner          TEXT NOT NULL,
    team           TEXT NOT NULL,
    role           TEXT NOT NULL,
    gpus           INTEGER NOT NULL,
    pods           INTEGER NOT NULL,
    priority       INTEGER NOT NULL,
    priority_class TEXT NOT NULL,
    arrival        {float} NOT NULL,
    position       INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    request_uid    TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
""")),
))

_T = TypeVar("_T")


def waiting_key(row: Mapping[str, Any]) -> str:
    return f"{row['resource']}/{row['namespace']}/{row['name']}"


class QueueSQL:
    """The queue's reads and its pass; see the module docstring."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    def queue_rows(self) -> list[QueueRow]:
        """Waiting workloads in queue order (position; 0, not yet placed by a pass, last)."""
        def read(ledger: Ledger) -> list[QueueRow]:
            rows = ledger.db.all("SELECT * FROM queue ORDER BY CASE WHEN position = 0 THEN 1 ELSE 0 END, "
                                 "position, arrival, resource, namespace, name")
            return [cast(QueueRow, dict(r)) for r in rows]
        rows: list[QueueRow] = self._read(read)
        return rows

    def run_queue(self, limits: Limits, *, now: float, actor: Actor,
                  pods_seen: Mapping[str, int] | None = None) -> PassResult:
        """One queue pass in one transaction (see the module docstring).

        `pods_seen` counts the pods of each waiting workload that exist (gated) in the
        cluster; a workload is released only once all its GPU pods exist, and one whose pods
        have not all appeared `gang_timeout_s` after it was queued is dropped. None skips
        both (no cluster: every gang counts as complete).
        """
        def work(ledger: Ledger) -> PassResult:
            return _run(ledger, limits, now=now, actor=actor, pods_seen=pods_seen)
        result: PassResult = self._write(work)
        return result

    def reconcile(self, pods: Sequence[PodView], *, now: float, actor: Actor,
                  absent: frozenset[str] = frozenset(), grace_s: float = FORGET_GRACE_S) -> list[Repair]:
        """Make the ledger agree with the cluster's `pods` in one transaction: the repairs
        `gateway.scheduling.reconcile.plan_reconcile` answers over the ledger's reservations
        (with `absent` and `grace_s` as it takes them), each applied and audited."""
        def work(ledger: Ledger) -> list[Repair]:
            held, waiting = _reconcile_view(ledger)
            repairs = _under_roots(ledger, plan_reconcile(pods, held, waiting=waiting, now=now, grace_s=grace_s,
                                                          absent=absent))
            records = ledger.targets([split_key(r.key) for r in repairs])
            for repair in repairs:
                _repair(ledger, repair, records.get(split_key(repair.key)), now=now, actor=actor)
            return repairs
        repairs: list[Repair] = self._write(work)
        return repairs

    def record_roots(self, roots: Sequence[Repair], listed: Collection[str], *, now: float,
                     actor: Actor) -> list[Repair]:
        """Record, in one transaction, the `roots` (gateway.scheduling.roots.read_root) whose keys
        the ledger does not hold, each without an owner and audited; and add `listed` (the kinds
        whose objects were all listed, as ledger resource keys) to the `roots/listed` setting,
        which closes the window in which a `/scale` of an unknown workload of such a kind is
        refused (`Ledger.roots_listed`). Returns the roots recorded."""
        def work(ledger: Ledger) -> list[Repair]:
            rows = ledger.db.all("SELECT resource || '/' || namespace || '/' || name AS key, uid, root_uid, shape, "
                                 "owner, team FROM reservations")
            held = {r["key"] for r in rows}
            roots_of = {r["uid"]: (r["root_uid"] or r["uid"], r["owner"], r["team"]) for r in rows
                        if r["uid"] and not charges_children(r["shape"])}
            new = unknown_roots(roots, held, roots_of)
            for root in new:
                _repair(ledger, root, None, now=now, actor=actor)
            before = ledger.roots_listed_kinds()
            after = before | frozenset(listed)
            if after != before:
                put_setting(ledger, SettingChange(*ROOTS_LISTED, sorted(after),
                                                  "the workloads of these kinds that predate the gateway are listed"),
                            actor, now)
            return new
        recorded: list[Repair] = self._write(work)
        return recorded

    def charged_workloads(self) -> dict[str, str]:
        """Workload key → owner of every charged reservation (its gated pods may start)."""
        def read(ledger: Ledger) -> dict[str, str]:
            rows = ledger.db.all("SELECT resource, namespace, name, owner FROM reservations WHERE charged = 1")
            return {waiting_key(r): r["owner"] for r in rows}
        found: dict[str, str] = self._read(read)
        return found


def _run(ledger: Ledger, limits: Limits, *, now: float, actor: Actor,
         pods_seen: Mapping[str, int] | None) -> PassResult:
    db = ledger.db
    rows = [dict(r) for r in db.all("SELECT * FROM queue")]
    sched = limits.scheduling
    dropped: list[tuple[str, str]] = []
    candidates: list[Waiting] = []
    incomplete: list[Held] = []
    for row in rows:
        key = waiting_key(row)
        seen = pods_seen.get(key, 0) if pods_seen is not None else int(row["pods"])
        if seen < int(row["pods"]):
            if now - float(row["arrival"]) > sched.gang_timeout_s:
                reason = (f"only {seen} of its {row['pods']} GPU pods appeared within "
                          f"{sched.gang_timeout_s:g} s of being queued")
                _drop(ledger, row, reason, now=now, actor=actor)
                dropped.append((key, reason))
            else:
                incomplete.append(Held(key, 0, f"waiting for its pods: {seen} of {row['pods']} appeared"))
            continue
        candidates.append(Waiting(key, row["owner"], row["team"], row["role"], int(row["gpus"]), int(row["pods"]),
                                  int(row["priority"]), float(row["arrival"])))
    exhausted_users: frozenset[str] = frozenset()
    exhausted_teams: frozenset[str] = frozenset()
    if sched.user_budgets or sched.team_budgets:
        hours = ledger.gpu_hours(period_start(now, sched.budget_period), now)
        exhausted_users = exhausted(hours["users"], sched.user_budgets)
        exhausted_teams = exhausted(hours["teams"], sched.team_budgets)
    users = ledger.gpus_by_scope("user")
    caps = Caps(
        user_used=users, team_used=ledger.gpus_by_scope("team"),
        role_user_caps=limits.role_user_caps, team_caps=limits.team_caps, default_team_cap=limits.default_team_cap,
        capacity=limits.capacity, cluster_used=sum(users.values()),
        exhausted_users=exhausted_users, exhausted_teams=exhausted_teams, team_shares=sched.team_shares,
    )
    plan = plan_release(candidates, caps, now=now, wait_limit_s=sched.wait_limit_s)
    for w in plan.released:
        _release(ledger, w, now=now, actor=actor)
    held = [*plan.held, *incomplete]
    for position, h in enumerate(held, start=1):
        db.run("UPDATE queue SET position = ?, reason = ? WHERE resource = ? AND namespace = ? AND name = ?",
               (position, h.reason, *split_key(h.key)))
    positioned = tuple(Held(h.key, i, h.reason, h.reserved, h.impossible) for i, h in enumerate(held, start=1))
    return PassResult(ReleasePlan(plan.released, positioned), tuple(dropped))


def _release(ledger: Ledger, w: Waiting, *, now: float, actor: Actor) -> None:
    """Charge a released workload's reservation (usage counters, GPU-hour interval) and audit it."""
    db = ledger.db
    key = split_key(w.key)
    db.run("DELETE FROM queue WHERE resource = ? AND namespace = ? AND name = ?", key)
    row = db.one("SELECT * FROM reservations WHERE resource = ? AND namespace = ? AND name = ?", key)
    if row is None or row["charged"]:
        return  # deleted meanwhile (its kill dropped the queue row too) or already charged
    # From now on it holds its GPUs: `created_at` says since when (gpuctl workloads shows it).
    db.run("UPDATE reservations SET charged = 1, created_at = ? WHERE resource = ? AND namespace = ? AND name = ?",
           (now, *key))
    ledger.count(row["owner"], row["team"], int(row["gpus"]))
    db.run("INSERT INTO usage_intervals (resource, namespace, name, owner, team, role, gpus, started_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, row["owner"], row["team"], row["role"], int(row["gpus"]), now))
    _audit(ledger, key, row, actor=actor, now=now, rule="queue-release",
           reason=f"released from the queue: its {w.pods} GPU pods exist and its {w.gpus} GPUs fit every quota "
                  f"that applies",
           request_uid=str(row["request_uid"]))


def _drop(ledger: Ledger, row: Mapping[str, Any], reason: str, *, now: float, actor: Actor) -> None:
    key = (row["resource"], row["namespace"], row["name"])
    ledger.db.run("DELETE FROM queue WHERE resource = ? AND namespace = ? AND name = ?", key)
    ledger.db.run("DELETE FROM reservations WHERE resource = ? AND namespace = ? AND name = ? AND charged = 0", key)
    ledger.db.run("DELETE FROM refs WHERE resource = ? AND namespace = ? AND name = ? AND NOT EXISTS (SELECT 1 FROM "
                  "reservations r WHERE r.resource = refs.resource AND r.namespace = refs.namespace "
                  "AND r.name = refs.name)", key)
    _audit(ledger, key, row, actor=actor, now=now, rule="gang-timeout", reason=f"queue reservation dropped: {reason}",
           request_uid=str(row["request_uid"]))


def _audit(ledger: Ledger, key: tuple[str, str, str], row: Mapping[str, Any], *, actor: Actor, now: float,
           rule: str, reason: str, request_uid: str) -> None:
    ledger.append_audit({
        "request_uid": request_uid, "user": actor.user, "groups": json.dumps(list(actor.groups)),
        "role": actor.role, "action": "schedule", "kind": key[0], "namespace": key[1], "name": key[2],
        "object_uid": "", "gpus": int(row["gpus"]), "decision": "allowed" if rule == "queue-release" else "denied",
        "mode": "enforce", "rule": rule, "reason": reason, "policy_version": "",
        "owner": row["owner"], "team": row["team"], "changes": "[]",
    }, now=now, dry_run=False)


def _reconcile_view(ledger: Ledger) -> tuple[list[LedgerHeld], frozenset[str]]:
    rows = ledger.db.all("SELECT resource || '/' || namespace || '/' || name AS key, owner, team, gpus, charged, "
                         "created_at, hold_until FROM reservations")
    held = [LedgerHeld(r["key"], r["owner"], r["team"], int(r["gpus"]), bool(r["charged"]), float(r["created_at"]),
                       None if r["hold_until"] is None else float(r["hold_until"]))
            for r in rows]
    waiting = frozenset(waiting_key(r) for r in ledger.db.all("SELECT resource, namespace, name FROM queue"))
    return held, waiting


def _under_roots(ledger: Ledger, repairs: list[Repair]) -> list[Repair]:
    """A GPU pod found running without a record, whose controller the ledger knows (a legacy
    ReplicaSet the listing recorded under its root): recorded under that root, charged nothing
    itself, so that the pods its controller makes next fit the root's charge beside it."""
    parents = {r.parent_uid for r in repairs if r.kind == "account" and r.parent_uid}
    if not parents:
        return repairs
    found = {uid: record for uid in parents
             if (record := ledger.by_uid(uid)) is not None and not charges_children(record.shape)}
    out = []
    for r in repairs:
        parent = found.get(r.parent_uid) if r.kind == "account" else None
        if parent is not None:
            r = replace(r, charged=False, owner=parent.owner, team=parent.team,
                        root_uid=parent.root_uid or parent.uid,
                        reason=f"{r.reason}, under the workload its controller belongs to")
        out.append(r)
    return out


def _repair(ledger: Ledger, repair: Repair, record: Target | None, *, now: float, actor: Actor) -> None:
    """Apply and audit one repair; `record` is its key's reservation as this transaction read it."""
    key = split_key(repair.key)
    if repair.kind in ("account", "root"):
        if record is not None:
            return
        decision = Decision(allowed=True, rule="reconcile", reason=repair.reason,
                            reserve=Reservation(repair.owner, repair.team, "", repair.gpus, repair.charged,
                                                repair.shape, uid=repair.uid, root_uid=repair.root_uid or repair.uid))
        owner, team, gpus = repair.owner, repair.team, repair.gpus
    else:
        if record is None:
            return
        owner, team, gpus = record.owner, record.team, record.gpus
        if repair.kind == "forget":
            decision = Decision(allowed=True, rule="reconcile", reason=repair.reason, release=True)
        else:
            # A finished pod holds no GPUs any more; a workload keeps its size for its record.
            kept = 0 if key[0] == "pods" else gpus
            decision = Decision(allowed=True, rule="reconcile", reason=repair.reason, reserve=Reservation(
                owner, team, record.role, kept, False, record.shape, uid=record.uid, root_uid=record.root_uid))
    ledger.write(key, decision, record, now=now, request_uid=f"reconcile-{now:.0f}")
    ledger.append_audit({
        "request_uid": "", "user": actor.user, "groups": json.dumps(list(actor.groups)), "role": actor.role,
        "action": "reconcile", "kind": key[0], "namespace": key[1], "name": key[2], "object_uid": repair.uid,
        "gpus": gpus, "decision": "allowed", "mode": "enforce", "rule": f"reconcile-{repair.kind}",
        "reason": repair.reason, "policy_version": "", "owner": owner, "team": team, "changes": "[]",
    }, now=now, dry_run=False)
