"""Run-time settings in the store: role bindings, quotas and a policy that replaced the bundle.

Every replica reads them (`settings_revision` is one cheap read, polled) and layers them over
its bundle (gateway.runtime). Each change is one write transaction holding the new value, a
new revision and its audit record (action `settings`, the old and new values in `changes`);
a change that needs a second person also consumes that person's approval in the same
transaction. See docs/admin.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.admission.ports import Actor, ApprovalKey, Setting, SettingChange
from gateway.errors import GatewayError
from gateway.store.migrations import Migration, Subject, statements
from gateway.store.sql import Ledger, state_change

#: Run-time settings, each with its revision.
SETTINGS_SCHEMA = Subject("settings", (
    Migration(1, statements("""
CREATE TABLE IF NOT EXISTS settings (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT,
    revision   INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at {float} NOT NULL,
    PRIMARY KEY (kind, name)
);
""")),
))

_T = TypeVar("_T")

#: Setting kinds (gateway.admission.overrides), the stored policy bundle, the controller's
#: baselines of the webhook configurations (gateway.scheduling.drift), and the workload kinds
#: it has listed (gateway.scheduling.roots).
KINDS = ("binding", "quota", "policy", "webhook", "roots")


class ApprovalRequired(GatewayError):
    """The change needs a second person's approval that does not exist (or was used up)."""


def _setting(row: Any) -> Setting:
    return Setting(row["kind"], row["name"], json.loads(row["value"]) if row["value"] is not None else None,
                   int(row["revision"]), row["updated_by"], float(row["updated_at"]))


def _use_approval(ledger: Ledger, key: ApprovalKey, actor: Actor, request_uid: str, now: float) -> str:
    approvals = ledger.live_approvals(key, now)
    if not approvals:
        raise ApprovalRequired(f"no approved, unused approval for {key[1]} {key[3]} requested by {key[0]}")
    approval = approvals[0]
    ledger.db.run("UPDATE approvals SET state = 'used', used_at = ?, used_request_uid = ? "
                  "WHERE id = ? AND state = 'approved'", (now, request_uid, approval.id))
    ledger.append_audit(_record(
        actor, kind="Approval", name=f"{approval.kind}/{approval.name}", object_uid=approval.id,
        request_uid=request_uid, reason=f"approval {approval.id} used by {actor.user}",
        changes=[state_change("approved", "used")], rule="approval",
    ), now=now, dry_run=False)
    return approval.id


def _record(actor: Actor, *, kind: str, name: str, object_uid: str, request_uid: str, reason: str,
            changes: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    return {
        "request_uid": request_uid, "user": actor.user, "groups": json.dumps(list(actor.groups)),
        "role": actor.role, "action": "settings" if kind != "Approval" else "approval", "kind": kind,
        "namespace": "", "name": name, "object_uid": object_uid, "gpus": 0,
        "decision": "allowed", "mode": "enforce", "rule": rule, "reason": reason,
        "policy_version": "", "owner": actor.user, "team": "",
        "changes": json.dumps(changes, sort_keys=True),
    }


def put_setting(ledger: Ledger, change: SettingChange, actor: Actor, now: float) -> dict[str, Any]:
    """Write one setting (or remove it) with its audit record; returns the old and new values."""
    if change.kind not in KINDS:
        raise ValueError(f"unknown setting kind {change.kind!r}")
    request_uid = "api-" + secrets.token_hex(8)
    used = _use_approval(ledger, change.approval, actor, request_uid, now) if change.approval else ""
    row = ledger.db.one("SELECT * FROM settings WHERE kind = ? AND name = ?", (change.kind, change.name))
    old = json.loads(row["value"]) if row is not None and row["value"] is not None else None
    top = ledger.db.one("SELECT COALESCE(MAX(revision), 0) AS r FROM settings")
    revision = int(top["r"] if top else 0) + 1
    value = None if change.value is None else json.dumps(change.value, sort_keys=True)
    ledger.db.run(
        "INSERT INTO settings (kind, name, value, revision, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, revision = excluded.revision, "
        "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (change.kind, change.name, value, revision, actor.user, now),
    )
    verb = "removed" if change.value is None else ("set" if old is None else "changed")
    approved = f" (approval {used})" if used else ""
    ledger.append_audit(_record(
        actor, kind="Policy" if change.kind == "policy" else "Setting", name=f"{change.kind}/{change.name}",
        object_uid=f"rev-{revision}", request_uid=request_uid,
        reason=f"{change.kind} {change.name} {verb} by {actor.user}{approved}: {change.reason}",
        changes=[{"field": f"{change.kind}/{change.name}", "change": verb if verb != "set" else "added",
                  "old": old, "new": change.value}],
        rule="settings",
    ), now=now, dry_run=False)
    return {"kind": change.kind, "name": change.name, "old": old, "new": change.value, "revision": revision,
            "approval": used or None}


class SettingsSQL:
    """Run-time settings for a backend that supplies `_read` and `_write`."""

    def _read(self, work: Callable[[Ledger], _T]) -> _T:
        raise NotImplementedError

    def _write(self, work: Callable[[Ledger], _T]) -> _T:
        raise NotImplementedError

    def settings_revision(self) -> int:
        """The latest revision: a replica re-reads the settings when it changes."""
        row = self._read(lambda ledger: ledger.db.one("SELECT COALESCE(MAX(revision), 0) AS r FROM settings"))
        return int(row["r"]) if row is not None else 0

    def settings(self) -> list[Setting]:
        """Every setting in force (removed ones are left out), oldest change first."""
        rows = self._read(lambda ledger: ledger.db.all(
            "SELECT * FROM settings WHERE value IS NOT NULL ORDER BY revision"))
        return [_setting(r) for r in rows]

    def put_setting(self, change: SettingChange, actor: Actor, *, now: float) -> dict[str, Any]:
        return self._write(lambda ledger: put_setting(ledger, change, actor, now))
