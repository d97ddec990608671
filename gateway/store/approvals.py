"""Approvals and break-glass grants in the store: one implementation over `sql.Ledger`.

`ApprovalsSQL` is mixed into both backends, which supply `_read` and `_write` (a
transaction, under the backend's write lock). Every change is an audit record with the old
and new state in `changes` (actions `approval` and `grant`); see docs/approvals.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.admission.approvals import TARGET_ACTIONS
from gateway.admission.identity import Grant
from gateway.admission.ports import Actor, NewApproval, NewGrant
from gateway.errors import GatewayError
from gateway.store.migrations import AddColumn, Migration, Row, Subject, statements
from gateway.store.sql import Ledger, change_record, state_change

#: Approvals and break-glass grants. An approval's `target_owner` and `target_team` are NULL in
#: rows written before them, and for approvals that are not for an existing workload.
APPROVALS_SCHEMA = Subject("approvals", (
    Migration(1, statements("""
CREATE TABLE IF NOT EXISTS approvals (
    id               TEXT PRIMARY KEY,
    requester        TEXT NOT NULL,
    requester_teams  TEXT NOT NULL,
    action           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    gpus             INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       {float} NOT NULL,
    expires_at       {float} NOT NULL,
    reviewer         TEXT NOT NULL DEFAULT '',
    review_comment   TEXT NOT NULL DEFAULT '',
    reviewed_at      {float},
    used_at          {float},
    used_request_uid TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS approvals_match ON approvals (requester, action, namespace, name, state);
CREATE TABLE IF NOT EXISTS grants (
    id         TEXT PRIMARY KEY,
    "user"     TEXT NOT NULL,
    role       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    granter    TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at {float} NOT NULL,
    expires_at {float} NOT NULL,
    ended_at   {float},
    ended_by   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS grants_state ON grants (state, expires_at);
""")),
    Migration(2, (AddColumn("approvals", "target_owner", "TEXT"), AddColumn("approvals", "target_team", "TEXT"))),
))

_T = TypeVar("_T")

#: Who the audit records of grants and approvals that expired by themselves name.
SYSTEM = Actor("gpu-gateway", (), "system")


class StateConflict(GatewayError):
    """The approval or grant is not in a state that allows the change (already reviewed, expired...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _effective(state: str, expires_at: float, now: float, live: tuple[str, ...]) -> str:
    return "expired" if state in live and expires_at <= now else state


def approval_view(row: Row, now: float) -> dict[str, Any]:
    out = dict(row)
    out["requester_teams"] = json.loads(out["requester_teams"])
    out["state"] = _effective(row["state"], row["expires_at"], now, ("pending", "approved"))
    return out


def grant_view(row: Row, now: float) -> dict[str, Any]:
    out = dict(row)
    out["state"] = _effective(row["state"], row["expires_at"], now, ("active",))
    return out


def _uid() -> str:
    return "api-" + secrets.token_hex(8)


# ------------------------------------------------------------------ approvals


def _workload_of(owner: str, team: str) -> str:
    """`bob's (team nlp) workload`: whose the ledger says a workload is."""
    if not owner:
        return "a workload with no recorded owner"
    return f"{owner}'s (team {team}) workload" if team else f"{owner}'s workload"


def create_approval(ledger: Ledger, new: NewApproval, actor: Actor, now: float) -> dict[str, Any]:
    """A pending approval; for a modify, kill or exec, with the owner and team the ledger records
    for its workload now (read in this transaction): its reviewer is checked against those."""
    approval_id = "apv-" + secrets.token_hex(6)
    owner: str | None = None
    team: str | None = None
    if new.action in TARGET_ACTIONS:
        owner, team = ledger.recorded_owner(new.kind, new.namespace, new.name)
    ledger.db.run(
        "INSERT INTO approvals (id, requester, requester_teams, action, kind, namespace, name, gpus, reason, "
        "state, created_at, expires_at, target_owner, target_team) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
        (approval_id, actor.user, json.dumps(list(new.requester_teams)), new.action, new.kind, new.namespace,
         new.name, new.gpus, new.reason, now, now + new.expires_in_s, owner, team),
    )
    row = _row(ledger, "approvals", approval_id)
    whose = f" ({_workload_of(owner, team or '')})" if owner is not None else ""
    ledger.append_audit(change_record(
        row, kind="Approval", action="approval", actor=actor, request_uid=_uid(),
        reason=f"approval {approval_id} requested{whose}: {new.reason}", changes=[state_change("", "pending")],
    ), now=now, dry_run=False)
    return approval_view(row, now)


def expire_approvals(ledger: Ledger, now: float) -> None:
    """Mark the pending and approved approvals whose time ran out `expired`, each with its audit
    record (as grant expiry is), so that an exception nobody used is on the record too."""
    for row in ledger.db.all("SELECT * FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= ? "
                             "ORDER BY expires_at, created_at, id", (now,)):
        ledger.db.run("UPDATE approvals SET state = 'expired' WHERE id = ? AND state = ?", (row["id"], row["state"]))
        how = "unused" if row["state"] == "approved" else "before anyone reviewed it"
        ledger.append_audit(change_record(
            row, kind="Approval", action="approval", actor=SYSTEM, request_uid=_uid(),
            reason=f"approval {row['id']} ({row['action']} of {row['kind']} {row['namespace']}/{row['name']} "
                   f"for {row['requester']}) expired {how}",
            changes=[state_change(row["state"], "expired")],
        ), now=now, dry_run=False)


def _row(ledger: Ledger, table: str, row_id: str) -> Row:
    """The approval or grant `row_id` (`table` is one of the two, never user input); KeyError if none."""
    row = ledger.db.one(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
    if row is None:
        raise KeyError(row_id)
    return row


def review_approval(ledger: Ledger, approval_id: str, verdict: str, actor: Actor, comment: str,
                    now: float) -> dict[str, Any]:
    """Approve or deny a pending, unexpired approval (the caller checked that `actor` may, for a
    modify, kill or exec against the workload's owner and team recorded in the approval). An
    approval is refused (StateConflict) when the ledger no longer records that owner and team
    for the workload: it was reassigned (or went) since, and the requester must ask again."""
    row = _row(ledger, "approvals", approval_id)
    state = approval_view(row, now)["state"]
    if state != "pending":
        raise StateConflict(f"approval {approval_id} is {state}, not pending")
    if verdict == "approved" and row["action"] in TARGET_ACTIONS:
        recorded = row["target_owner"], row["target_team"] or ""
        current = ledger.recorded_owner(row["kind"], row["namespace"], row["name"])
        if recorded[0] is None:
            raise StateConflict(f"approval {approval_id} was asked for before the gateway recorded whose workload "
                                f"it is for; ask for a new approval")
        if current != recorded:
            raise StateConflict(
                f"{row['kind']} {row['namespace']}/{row['name']} is now {_workload_of(*current)}, not "
                f"{_workload_of(*recorded)} as when approval {approval_id} was asked for; ask for a new approval")
    ledger.db.run("UPDATE approvals SET state = ?, reviewer = ?, review_comment = ?, reviewed_at = ? "
                  "WHERE id = ? AND state = 'pending'", (verdict, actor.user, comment, now, approval_id))
    note = f": {comment}" if comment else ""
    ledger.append_audit(change_record(
        row, kind="Approval", action="approval", actor=actor, request_uid=_uid(),
        reason=f"approval {approval_id} {verdict} by {actor.user}{note}",
        changes=[state_change("pending", verdict)],
    ), now=now, dry_run=False)
    return approval_view(_row(ledger, "approvals", approval_id), now)


# ------------------------------------------------------------------ grants


def create_grant(ledger: Ledger, new: NewGrant, actor: Actor, now: float) -> dict[str, Any]:
    grant_id = "bg-" + secrets.token_hex(6)
    ledger.db.run(
        'INSERT INTO grants (id, "user", role, reason, granter, state, created_at, expires_at) '
        "VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
        (grant_id, new.user, new.role, new.reason, actor.user, now, now + new.expires_in_s),
    )
    row = _row(ledger, "grants", grant_id)
    ledger.append_audit(change_record(
        row, kind="Grant", action="grant", actor=actor, request_uid=_uid(),
        reason=f"BREAK-GLASS grant {grant_id}: role {new.role} to {new.user} for {new.expires_in_s:g} s: "
               f"{new.reason}",
        changes=[state_change("", "active"), {"field": "role", "change": "added", "new": new.role}],
    ), now=now, dry_run=False)
    return grant_view(row, now)


def end_grant(ledger: Ledger, row: Row, state: str, actor: Actor, now: float) -> None:
    """Mark an active grant `revoked` or `expired`, with its audit record."""
    ledger.db.run("UPDATE grants SET state = ?, ended_at = ?, ended_by = ? WHERE id = ? AND state = 'active'",
                  (state, now, actor.user, row["id"]))
    ledger.append_audit(change_record(
        row, kind="Grant", action="grant", actor=actor, request_uid=_uid(),
        reason=f"BREAK-GLASS grant {row['id']} ({row['role']} for {row['user']}) {state}",
        changes=[state_change("active", state)],
    ), now=now, dry_run=False)


def revoke_grant(ledger: Ledger, grant_id: str, actor: Actor, now: float) -> dict[str, Any]:
    row = _row(ledger, "grants", grant_id)
    state = grant_view(row, now)["state"]
    if state != "active":
        raise StateConflict(f"grant {grant_id} is {state}, not active")
    end_grant(ledger, row, "revoked", actor, now)
    return grant_view(_row(ledger, "grants", grant_id), now)


def expire_grants(ledger: Ledger, now: float) -> None:
    for row in ledger.db.all("SELECT * FROM grants WHERE state = 'active' AND expires_at <= ?", (now,)):
        end_grant(ledger, row, "expired", SYSTEM, now)


def expire_lapsed(ledger: Ledger, now: float) -> None:
    """Grants and approvals whose time ran out, marked and audited in one transaction."""
    expire_grants(ledger, now)
    expire_approvals(ledger, now)


# ------------------------------------------------------------------ the backends' methods


class ApprovalsSQL:
    """Approvals and grants for a backend that supplies `_read` and `_write`."""

    def _read(self, work: Callable[[Ledger], _T]) -> _T:
        raise NotImplementedError

    def _write(self, work: Callable[[Ledger], _T]) -> _T:
        raise NotImplementedError

    def create_approval(self, new: NewApproval, actor: Actor, *, now: float) -> dict[str, Any]:
        return self._write(lambda ledger: create_approval(ledger, new, actor, now))

    def approval(self, approval_id: str, *, now: float) -> dict[str, Any] | None:
        row = self._read(lambda ledger: ledger.db.one("SELECT * FROM approvals WHERE id = ?", (approval_id,)))
        return None if row is None else approval_view(row, now)

    def approvals(self, *, now: float) -> list[dict[str, Any]]:
        rows = self._read(lambda ledger: ledger.db.all("SELECT * FROM approvals ORDER BY created_at, id"))
        return [approval_view(r, now) for r in rows]

    def review_approval(self, approval_id: str, verdict: str, actor: Actor, comment: str, *,
                        now: float) -> dict[str, Any]:
        """Approve (`verdict` "approved") or deny ("denied"); KeyError if unknown, StateConflict if not pending."""
        return self._write(lambda ledger: review_approval(ledger, approval_id, verdict, actor, comment, now))

    def create_grant(self, new: NewGrant, actor: Actor, *, now: float) -> dict[str, Any]:
        return self._write(lambda ledger: create_grant(ledger, new, actor, now))

    def grants(self, *, now: float) -> list[dict[str, Any]]:
        rows = self._read(lambda ledger: ledger.db.all("SELECT * FROM grants ORDER BY created_at, id"))
        return [grant_view(r, now) for r in rows]

    def revoke_grant(self, grant_id: str, actor: Actor, *, now: float) -> dict[str, Any]:
        return self._write(lambda ledger: revoke_grant(ledger, grant_id, actor, now))

    def live_grants(self, *, now: float) -> tuple[Grant, ...]:
        """The active, unexpired grants. Grants and approvals found expired are marked so, with
        their audit records: the gateway reads this at least once a second while it is used."""
        rows, lapsed = self._read(lambda ledger: (
            ledger.db.all("SELECT * FROM grants WHERE state = 'active'"),
            ledger.db.one("SELECT id FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= ? "
                          "LIMIT 1", (now,))))
        if any(r["expires_at"] <= now for r in rows) or lapsed is not None:
            self._write(lambda ledger: expire_lapsed(ledger, now))
        return tuple(Grant(r["id"], r["user"], r["role"], r["expires_at"]) for r in rows if r["expires_at"] > now)
