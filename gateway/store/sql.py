"""The ledger and the audit chain in portable SQL, shared by the SQLite and PostgreSQL stores.

`Ledger` holds every statement and every row mapping once. It runs on a `Runner`, the
backend's thin wrapper over one connection inside a transaction the backend opened; the
backend owns connections, locking and transactions. Statements are written with `?`
placeholders; a backend that uses another style rewrites them (see `PostgresStore`).
Column names that are keywords in PostgreSQL (`user`, `groups`) are always quoted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gateway.admission.admission import Facts, Target, TargetKey, decide
from gateway.admission.approvals import WAIVABLE
from gateway.admission.decision import Decision, Reservation
from gateway.admission.plan import Approval
from gateway.admission.ports import Actor, ApprovalKey, LedgerRow
from gateway.admission.quota import Usage
from gateway.admission.scheduling_settings import BudgetQuery, spent_budgets
from gateway.admission.shape import asked, charges_children, gang_pods, held_charge
from gateway.audit.ports import AuditQuery, VerifyResult, kind_names, named_by
from gateway.audit.records import admission_record
from gateway.store.chain import AUDIT_FIELDS, GENESIS, LATER_FIELDS, row_hash, verify_rows
from gateway.store.migrations import AddColumn, ByDialect, Migration, Row, Runner, Subject, statements
from gateway.store.types import Job

#: `root_pods` holds, per root UID, the GPUs of the pods recorded under it (`pods_under`), so that
#: a controller's pod create reads one row however large its gang. Triggers on `reservations`
#: keep it, so every write keeps it in step, a previous release's included (a rollback).
_UNDER_A_ROOT = "{row}.resource = 'pods' AND {row}.root_uid <> '' AND {row}.uid <> {row}.root_uid"
_TAKE_OLD = ("UPDATE root_pods SET gpus = gpus - OLD.gpus WHERE root_uid = OLD.root_uid AND "
             + _UNDER_A_ROOT.format(row="OLD"))
_ADD_NEW = ("INSERT INTO root_pods (root_uid, gpus) VALUES (NEW.root_uid, NEW.gpus) "
            "ON CONFLICT (root_uid) DO UPDATE SET gpus = root_pods.gpus + excluded.gpus")
_ADD_NEW_IF = ("INSERT INTO root_pods (root_uid, gpus) SELECT NEW.root_uid, NEW.gpus WHERE "
               + _UNDER_A_ROOT.format(row="NEW")
               + " ON CONFLICT (root_uid) DO UPDATE SET gpus = root_pods.gpus + excluded.gpus")

#: The ledger's tables: reservations (and what their pods reference), the usage counters, the
#: intervals GPU-hours are counted from.
LEDGER_SCHEMA = Subject("ledger", (
    Migration(1, statements("""
CREATE TABLE IF NOT EXISTS reservations (
    resource    TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    team        TEXT NOT NULL,
    role        TEXT NOT NULL,
    gpus        INTEGER NOT NULL,
    charged     INTEGER NOT NULL,
    shape       TEXT NOT NULL,
    created_at  {float} NOT NULL,
    request_uid TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
CREATE INDEX IF NOT EXISTS reservations_owner ON reservations (owner, charged);
CREATE INDEX IF NOT EXISTS reservations_team ON reservations (team, charged);
CREATE INDEX IF NOT EXISTS reservations_object ON reservations (namespace, name);
CREATE TABLE IF NOT EXISTS usage (
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    gpus  INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS usage_intervals (
    resource   TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    team       TEXT NOT NULL,
    role       TEXT NOT NULL,
    gpus       INTEGER NOT NULL,
    started_at {float} NOT NULL,
    ended_at   {float}
);
CREATE INDEX IF NOT EXISTS usage_intervals_open ON usage_intervals (resource, namespace, name, ended_at);
CREATE INDEX IF NOT EXISTS usage_intervals_time ON usage_intervals (started_at);
""")),
    Migration(2, (
        AddColumn("reservations", "uid", "TEXT NOT NULL DEFAULT ''"),
        AddColumn("reservations", "root_uid", "TEXT NOT NULL DEFAULT ''"),
        "CREATE INDEX IF NOT EXISTS reservations_uid ON reservations (uid)",
        *statements("""
CREATE TABLE IF NOT EXISTS refs (
    namespace    TEXT NOT NULL,
    ref_resource TEXT NOT NULL,
    ref_name     TEXT NOT NULL,
    resource     TEXT NOT NULL,
    name         TEXT NOT NULL,
    PRIMARY KEY (namespace, ref_resource, ref_name, resource, name)
);
CREATE INDEX IF NOT EXISTS refs_workload ON refs (resource, namespace, name);
"""),
    )),
    Migration(3, ("CREATE INDEX IF NOT EXISTS reservations_root ON reservations (root_uid, resource)",)),
    # No query looks reservations up by owner or team (the usage counters answer that), and each
    # index costs every admission's write.
    Migration(4, ("DROP INDEX IF EXISTS reservations_owner", "DROP INDEX IF EXISTS reservations_team")),
    # A pod deleted at once whose containers may still run: its record stays until then.
    Migration(5, (AddColumn("reservations", "hold_until", "{float}"),)),
    # The UIDs of recorded workloads deleted lately (GONE_PARENT_TTL_S).
    Migration(6, statements("""
CREATE TABLE IF NOT EXISTS gone_parents (
    uid     TEXT PRIMARY KEY,
    gone_at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS gone_parents_age ON gone_parents (gone_at);
""")),
    # The GPUs of the pods recorded under each root, kept by triggers (`root_pods`, above).
    Migration(7, ("CREATE TABLE IF NOT EXISTS root_pods (root_uid TEXT PRIMARY KEY, gpus INTEGER NOT NULL)",
                  ByDialect(sqlite=(
                      "DROP TRIGGER IF EXISTS root_pods_insert", "DROP TRIGGER IF EXISTS root_pods_update",
                      "DROP TRIGGER IF EXISTS root_pods_delete",
                      "CREATE TRIGGER root_pods_insert AFTER INSERT ON reservations "
                      "WHEN NEW.resource = 'pods' AND NEW.root_uid <> '' AND NEW.uid <> NEW.root_uid BEGIN "
                      f"{_ADD_NEW}; END",
                      "CREATE TRIGGER root_pods_update AFTER UPDATE OF resource, gpus, uid, root_uid ON reservations "
                      f"BEGIN {_TAKE_OLD}; {_ADD_NEW_IF}; END",
                      "CREATE TRIGGER root_pods_delete AFTER DELETE ON reservations "
                      "WHEN OLD.resource = 'pods' AND OLD.root_uid <> '' AND OLD.uid <> OLD.root_uid BEGIN "
                      f"{_TAKE_OLD}; DELETE FROM root_pods WHERE root_uid = OLD.root_uid AND gpus = 0; END",
                  ), postgres=(
                      "CREATE OR REPLACE FUNCTION gpu_gateway_root_pods() RETURNS trigger LANGUAGE plpgsql AS $$ "
                      "BEGIN IF TG_OP <> 'INSERT' THEN "
                      f"{_TAKE_OLD}; END IF; IF TG_OP = 'DELETE' THEN DELETE FROM root_pods WHERE root_uid = "
                      f"OLD.root_uid AND gpus = 0; ELSE {_ADD_NEW_IF}; END IF; RETURN NULL; END $$",
                      "DROP TRIGGER IF EXISTS root_pods_sum ON reservations",
                      "CREATE TRIGGER root_pods_sum AFTER INSERT OR UPDATE OR DELETE ON reservations "
                      "FOR EACH ROW EXECUTE FUNCTION gpu_gateway_root_pods()",
                  )))),
))

#: How long the UID of a deleted workload is remembered: a controller acting on a stale cache
#: (or a person copying the ownerReference) may name it after the DELETE.
GONE_PARENT_TTL_S = 86400.0


#: `usage` holds the charged GPUs per user and per team, kept in step with `reservations`
#: in the same transactions, so a cap check reads two rows however large the ledger grows.
REBUILD_USAGE = (
    "DELETE FROM usage",
    "INSERT INTO usage (scope, name, gpus) "
    "SELECT 'user', owner, SUM(gpus) FROM reservations WHERE charged = 1 GROUP BY owner",
    "INSERT INTO usage (scope, name, gpus) "
    "SELECT 'team', team, SUM(gpus) FROM reservations WHERE charged = 1 AND team != '' GROUP BY team",
    "DELETE FROM root_pods",
    "INSERT INTO root_pods (root_uid, gpus) SELECT root_uid, SUM(gpus) FROM reservations r WHERE "
    + _UNDER_A_ROOT.format(row="r") + " GROUP BY root_uid",
)



def _quote(column: str) -> str:
    """Quote the column names that are keywords in PostgreSQL (harmless in SQLite)."""
    return f'"{column}"' if column in ("user", "groups") else column


AUDIT_COLUMNS = (*AUDIT_FIELDS, "prev_hash", "hash")
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_quote(c) for c in AUDIT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in AUDIT_COLUMNS)})"
)
_HEAD = "SELECT count, last_hash FROM audit_head WHERE id = 1"
_SET_HEAD = (
    "INSERT INTO audit_head (id, count, last_hash) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET count = excluded.count, last_hash = excluded.last_hash"
)


#: The setting (kind, name) naming the workload kinds (ledger resource keys) whose objects the
#: controller has listed completely (gateway.scheduling.roots), written by `record_roots`.
ROOTS_LISTED = ("roots", "listed")

#: Keys looked up by one statement (`Ledger.targets`): far below SQLite's 32,766 parameters.
_KEYS_PER_STATEMENT = 100

#: `Ledger.target_and_usage`: the first row is the target's (all NULL where the ledger holds none),
#: with the usage of its owner and team (`part` 0); with `_AND_REFERENCES`, the records of the
#: referenced objects follow (`part` 1).
_TARGET_ROW = ("SELECT 0 AS part, r.resource, r.namespace, r.name, r.owner, r.team, r.role, r.gpus, r.charged, "
               "r.shape, r.uid, r.root_uid, 0 AS waiting, ")
_OF_TARGET = "FROM (SELECT 1 AS one) AS o LEFT JOIN reservations r ON r.resource = ? AND r.namespace = ? AND r.name = ?"
_TARGET_AND_USAGE = (
    _TARGET_ROW + "(SELECT gpus FROM usage WHERE scope = 'user' AND name = COALESCE(r.owner, ?)) AS used_user, "
    "(SELECT gpus FROM usage WHERE scope = 'team' AND name = COALESCE(r.team, ?)) AS used_team " + _OF_TARGET)
_TARGET_ALONE = _TARGET_ROW + "NULL AS used_user, NULL AS used_team " + _OF_TARGET
_AND_REFERENCES = (
    " UNION ALL SELECT 1 AS part, resource, namespace, name, owner, team, role, gpus, charged, shape, uid, "
    "root_uid, 0 AS waiting, NULL AS used_user, NULL AS used_team FROM reservations WHERE ")

#: `Ledger.parent_and_root`: a controller's parent by UID, its root (itself when it holds its own
#: charge), and `Ledger.pods_under` that root for the pod asking (its namespace and name first).
_ROOT_UID = "CASE WHEN p.root_uid IN ('', p.uid) THEN p.uid ELSE r.uid END"
_PARENT_AND_ROOT = (
    "SELECT p.owner, p.team, p.role, p.gpus, p.charged, p.shape, p.uid, p.root_uid, "
    "qp.name IS NOT NULL AS waiting, r.owner AS r_owner, r.team AS r_team, r.role AS r_role, "
    "r.gpus AS r_gpus, r.charged AS r_charged, r.shape AS r_shape, r.uid AS r_uid, "
    "r.root_uid AS r_root_uid, qr.name IS NOT NULL AS r_waiting, "
    f"COALESCE((SELECT gpus FROM root_pods WHERE root_uid = {_ROOT_UID}), 0) - COALESCE((SELECT o.gpus "
    "FROM reservations o WHERE o.resource = 'pods' AND o.namespace = ? AND o.name = ? "
    f"AND o.root_uid = {_ROOT_UID} AND o.uid <> {_ROOT_UID}), 0) AS siblings "
    "FROM reservations p LEFT JOIN queue qp ON qp.resource = p.resource AND qp.namespace = p.namespace "
    "AND qp.name = p.name LEFT JOIN reservations r ON r.uid = p.root_uid AND p.root_uid <> '' "
    "AND p.root_uid <> p.uid LEFT JOIN queue qr ON qr.resource = r.resource AND qr.namespace = r.namespace "
    "AND qr.name = r.name WHERE p.uid = ?")


class Ledger:
    """Reads and writes of the ledger and the audit chain over a `Runner`.

    Statements are few per decision, since each costs a round trip (PostgreSQL) or a pass
    through SQLite's VM: the records a request references are read in one, and within a batch
    of admissions (`chain_begin` .. `chain_flush`) the chain's head is read once and written once.
    """

    def __init__(self, db: Runner) -> None:
        self.db = db
        self._batch = False
        self._head: tuple[int, str] | None = None
        """Within a batch: the chain's head as the records appended so far leave it (None: not read yet)."""
        self._head_dirty = False

    def chain_begin(self) -> None:
        """Start a batch in the open transaction (which holds the write lock)."""
        self._batch, self._head, self._head_dirty = True, None, False

    def chain_mark(self) -> tuple[tuple[int, str] | None, bool]:
        """The head as it stands, to go back to when a job's savepoint is rolled back."""
        return self._head, self._head_dirty

    def chain_restore(self, mark: tuple[tuple[int, str] | None, bool]) -> None:
        self._head, self._head_dirty = mark

    def chain_flush(self) -> None:
        """Write the head the batch's records leave, before the COMMIT; end the batch."""
        if self._batch and self._head_dirty and self._head is not None:
            self.db.run(_SET_HEAD, self._head)
        self.chain_discard()

    def chain_discard(self) -> None:
        """End the batch without writing (its transaction is rolled back)."""
        self._batch, self._head, self._head_dirty = False, None, False

    # ------------------------------------------------------------- reads

    def target(self, key: TargetKey) -> Target | None:
        row = self.db.one(
            "SELECT owner, team, role, gpus, charged, shape, uid, root_uid, 0 AS waiting FROM reservations "
            "WHERE resource = ? AND namespace = ? AND name = ?",
            key,
        )
        return _target(row)

    def targets(self, keys: Sequence[TargetKey]) -> dict[TargetKey, Target]:
        """The records of `keys` (those the ledger holds), in one statement."""
        keys = list(dict.fromkeys(keys))
        found: dict[TargetKey, Target] = {}
        for start in range(0, len(keys), _KEYS_PER_STATEMENT):
            chunk = keys[start:start + _KEYS_PER_STATEMENT]
            rows = self.db.all(
                "SELECT resource, namespace, name, owner, team, role, gpus, charged, shape, uid, root_uid, "
                "0 AS waiting FROM reservations WHERE "
                + " OR ".join(["(resource = ? AND namespace = ? AND name = ?)"] * len(chunk)),
                [part for key in chunk for part in key])
            for row in rows:
                record = _target(row)
                assert record is not None
                found[(row["resource"], row["namespace"], row["name"])] = record
        return found

    def by_uid(self, uid: str) -> Target | None:
        """The record of the object with this UID (a controller's parent, a root)."""
        if not uid:
            return None
        return _target(self.db.one(
            "SELECT r.owner, r.team, r.role, r.gpus, r.charged, r.shape, r.uid, r.root_uid, "
            "q.name IS NOT NULL AS waiting FROM reservations r LEFT JOIN queue q ON q.resource = r.resource "
            "AND q.namespace = r.namespace AND q.name = r.name WHERE r.uid = ?", (uid,)))

    def parent_and_root(self, uid: str, key: TargetKey | None, pod: TargetKey | None = None,
                        ) -> tuple[Target | None, Target | None, int | None]:
        """The record a controller ownerReference points to (by UID, or, for a record written
        before UIDs were kept, by its kind, namespace and name), the record holding its charge
        (itself when it is a root), and, for the pod `pod`, `pods_under` that root (None where
        not read), in one statement: every pod a controller makes reads all three."""
        row = self.db.one(_PARENT_AND_ROOT, (*(pod[1:] if pod is not None else ("", "")), uid)) if uid else None
        if row is None:
            legacy = self.target(key) if key is not None else None
            found = legacy if legacy is not None and not legacy.uid else None
            return found, found, None
        parent = _target(row)
        assert parent is not None
        siblings = int(row["siblings"]) if pod is not None else None
        if parent.is_root:
            return parent, parent, siblings
        if row["r_uid"] is None:
            return parent, None, None
        return parent, Target(row["r_owner"], row["r_team"], row["r_role"], row["r_gpus"], bool(row["r_charged"]),
                              row["r_shape"], row["r_uid"], row["r_root_uid"], waiting=bool(row["r_waiting"])), siblings

    def roots_listed_kinds(self) -> frozenset[str]:
        """The kinds (ledger resource keys) whose workloads that predate the gateway the
        controller has listed, and so recorded (setting `roots/listed`)."""
        row = self.db.one("SELECT value FROM settings WHERE kind = ? AND name = ?", ROOTS_LISTED)
        value = json.loads(row["value"]) if row is not None and row["value"] is not None else []
        return frozenset(str(k) for k in value) if isinstance(value, list) else frozenset()

    def recorded_owner(self, kind: str, namespace: str, name: str) -> tuple[str, str]:
        """The owner and team the ledger records for the workload an approval names by its kind
        (`PyTorchJob`, `pytorchjobs` or `pytorchjobs.kubeflow.org`), namespace and name; ("", "")
        when it records none. Records are keyed by resource (`pytorchjobs.kubeflow.org`, `pods`):
        one whose resource is `kind` itself is preferred, then the first by resource."""
        rows = {r["resource"]: r for r in self.db.all("SELECT resource, owner, team FROM reservations "
                                                      "WHERE namespace = ? AND name = ?", (namespace, name))}
        keys = named_by(kind, rows)
        return (rows[keys[0]]["owner"], rows[keys[0]]["team"]) if keys else ("", "")

    def usage(self, target: Target | None, owner: str, team: str) -> Usage:
        """Charged GPUs of the owner and of the team, less the target's own reservation."""
        rows = {r["scope"]: r["gpus"] for r in self.db.all(
            "SELECT scope, gpus FROM usage WHERE (scope = 'user' AND name = ?) OR (scope = 'team' AND name = ?)",
            (owner, team),
        )}
        user, team_used = int(rows.get("user", 0)), int(rows.get("team", 0)) if team else 0
        if target is not None and target.charged:
            user -= target.gpus if target.owner == owner else 0
            team_used -= target.gpus if team and target.team == team else 0
        return Usage(user=user, team=team_used)

    def target_and_usage(self, key: TargetKey, references: Sequence[TargetKey] = (), *,
                         usage_of: tuple[str, str] | None = None,
                         ) -> tuple[Target | None, Usage | None, dict[TargetKey, Target]]:
        """`target`, `targets(references)` and, given `usage_of` (owner, team), `usage` in one
        statement: a launch reads all three, a controller's pod the first two, and each statement
        costs a round trip or a pass through SQLite's VM. The usage is that of the target's owner
        and team where the ledger holds the target, else of `usage_of`. At most
        `_KEYS_PER_STATEMENT` references."""
        refs = list(dict.fromkeys(references))
        assert len(refs) <= _KEYS_PER_STATEMENT
        owner, team = usage_of or ("", "")
        sql = _TARGET_AND_USAGE if usage_of is not None else _TARGET_ALONE
        if refs:
            sql += _AND_REFERENCES + " OR ".join(["(resource = ? AND namespace = ? AND name = ?)"] * len(refs))
        row: Row | None = None
        found: dict[TargetKey, Target] = {}
        args = (owner, team, *key) if usage_of is not None else key
        for each in self.db.all(sql, (*args, *(part for ref in refs for part in ref))):
            if each["part"] == 0:
                row = each
                continue
            record = _target(each)
            assert record is not None
            found[(each["resource"], each["namespace"], each["name"])] = record
        assert row is not None
        target = _target(row) if row["owner"] is not None else None
        if usage_of is None:
            return target, None, found
        if target is not None:
            owner, team = target.owner, target.team
        user = int(row["used_user"] or 0)
        team_used = int(row["used_team"] or 0) if team else 0
        if target is not None and target.charged:
            user -= target.gpus
            team_used -= target.gpus if team else 0
        return target, Usage(user=user, team=team_used), found

    def facts(self, key: TargetKey, owner: str, team: str, references: Sequence[TargetKey] = (),
              *, usage: bool = True, parent_of: tuple[str, TargetKey | None] | None = None,
              uids: Sequence[str] = (), referrers: bool = False) -> Facts:
        """The target's record, the records of referenced objects, and (unless `usage` is
        False, for requests that cannot add GPUs) the owner's and team's usage and the record
        of the target's root. `parent_of`
        (UID and key) names the parent of an actor's new object: its record, and the root's,
        are read, and usage is the parent's owner's. `referrers`: the owners of the recorded
        workloads that reference the target (for the create of a data object)."""
        merged = len(references) <= _KEYS_PER_STATEMENT  # the usual: read with the target
        target, read_usage, found = self.target_and_usage(
            key, references if merged else (), usage_of=(owner, team) if usage and parent_of is None else None)
        parent = root = None
        siblings_read: int | None = None
        parent_gone = False
        if parent_of is not None:
            parent, root, siblings_read = self.parent_and_root(*parent_of, pod=key if key[0] == "pods" else None)
            anchor = parent
            parent_gone = parent is None and bool(parent_of[0]) and self.db.one(
                "SELECT 1 AS gone FROM gone_parents WHERE uid = ?", (parent_of[0],)) is not None
        else:
            anchor = root = target
            if usage and target is not None and not target.is_root:
                # Only a change that may add GPUs is held to the root's charge: an exec or a
                # delete of a controller's pod needs the pod's own record alone.
                root = self.by_uid(target.root_uid)
        if anchor is not None:
            owner, team = anchor.owner, anchor.team
        if not merged:
            found = self.targets(references)
        by_uid = {uid: record for uid in uids if (record := self.by_uid(uid)) is not None}
        if parent_of is not None and (parent is None or not parent.owner or not charges_children(parent.shape)):
            usage = False  # a controller's object is held to its root's charge, not to caps: no usage read
        if read_usage is None:
            read_usage = self.usage(target, owner, team) if usage else Usage()
        siblings = 0
        if parent_of is not None and root is not None and root.uid and key[0] == "pods":
            siblings = siblings_read if siblings_read is not None else self.pods_under(root.uid, key)
        return Facts(target=target, usage=read_usage, references=found, parent=parent, root=root, by_uid=by_uid,
                     referrers=self.referrers(key) if referrers else (), pods_under_root=siblings,
                     parent_gone=parent_gone)

    def pods_under(self, root_uid: str, key: TargetKey | None) -> int:
        """GPUs of the pods recorded under the root with this UID, other than `key`: the pods its
        controllers made that still exist (terminating ones included; finished ones hold 0)."""
        row = self.db.one(
            "SELECT COALESCE((SELECT gpus FROM root_pods WHERE root_uid = ?), 0) - COALESCE((SELECT gpus "
            "FROM reservations WHERE resource = 'pods' AND namespace = ? AND name = ? AND root_uid = ? "
            "AND uid <> ?), 0) AS gpus",
            (root_uid, *(key[1:] if key is not None else ("", "")), root_uid, root_uid))
        return int(row["gpus"]) if row is not None else 0

    def referrers(self, key: TargetKey) -> tuple[tuple[str, str], ...]:
        """(owner, team) of the recorded workloads whose pods reference the object `key` names."""
        rows = self.db.all(
            "SELECT DISTINCT r.owner, r.team FROM refs f JOIN reservations r ON r.resource = f.resource "
            "AND r.namespace = f.namespace AND r.name = f.name "
            "WHERE f.namespace = ? AND f.ref_resource = ? AND f.ref_name = ? ORDER BY r.owner, r.team",
            (key[1], key[0], key[2]))
        return tuple((str(r["owner"]), str(r["team"])) for r in rows if r["owner"])

    # ------------------------------------------------------------- the write path

    def preview(self, job: Job) -> tuple[Decision, Facts]:
        """The decision on one job from the facts as they are, writing nothing, and the facts
        as read (before a what-if's `job.stated` is laid over them).

        A denial an approval could lift is decided again with the requester's live approvals
        for the object (read only then, so that allowed requests cost no extra query).
        `decide` writes what this decides; the what-if (gateway/whatif.py) stops here.
        """
        facts = self.facts(job.key, job.owner, job.team, job.reference_keys, usage=job.needs_usage,
                           parent_of=job.parent, uids=job.uids, referrers=job.referrers)
        if job.budget is not None:
            facts = replace(facts, spent_budgets=self.spent_budgets(job.budget, job.now))
        if job.roots and facts.target is None:
            facts = replace(facts, roots_listed=job.key[0] in self.roots_listed_kinds())
        decision = decide(job.plan, job.policy, job.stated.over(facts) if job.stated else facts)
        if not decision.allowed and decision.rule in WAIVABLE and job.approval_key is not None:
            approvals = self.live_approvals(job.approval_key, job.now)
            if approvals:
                facts = replace(facts, approvals=approvals)
                decision = decide(job.plan, job.policy, job.stated.over(facts) if job.stated else facts)
        return decision, facts

    def decide(self, job: Job) -> Decision:
        """Decide one job (`preview`), and write its audit record and reservation change; an
        approval the decision uses is marked used in this same transaction."""
        decision, facts = self.preview(job)
        if decision.audited:
            self.append_audit(admission_record(job.audit, decision), now=job.now, dry_run=job.dry_run)
        if decision.allowed and not job.dry_run:
            self.write(job.key, decision, facts.target, now=job.now, request_uid=job.request_uid)
            if decision.enqueue is not None:
                self.enqueue(job.key, decision, now=job.now, request_uid=job.request_uid)
            if decision.use_approval:
                self.use_approval(decision.use_approval, job)
        return decision

    def live_approvals(self, key: ApprovalKey, now: float) -> tuple[Approval, ...]:
        """Approved, unused, unexpired approvals of (requester, action, namespace, name), oldest first."""
        rows = self.db.all(
            "SELECT id, requester, action, kind, namespace, name, gpus, reviewer, target_owner, target_team "
            "FROM approvals "
            "WHERE requester = ? AND action = ? AND namespace = ? AND name = ? AND state = 'approved' "
            "AND expires_at > ? ORDER BY created_at, id",
            (*key, now),
        )
        return tuple(Approval(r["id"], r["requester"], r["action"], r["kind"], r["namespace"], r["name"],
                              int(r["gpus"]), r["reviewer"], r["target_owner"], r["target_team"] or "")
                     for r in rows)

    def use_approval(self, approval_id: str, job: Job) -> None:
        """Mark an approval used by this admission, with its audit record."""
        self.db.run("UPDATE approvals SET state = 'used', used_at = ?, used_request_uid = ? "
                    "WHERE id = ? AND state = 'approved'", (job.now, job.request_uid, approval_id))
        row = self.db.one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        assert row is not None
        self.append_audit(change_record(
            row, kind="Approval", action="approval", actor=Actor(row["requester"]), request_uid=job.request_uid,
            reason=f"approval {approval_id} used by admission request {job.request_uid}",
            changes=[state_change("approved", "used")],
        ), now=job.now, dry_run=False)

    def apply(self, key: TargetKey, decision: Decision, *, now: float, request_uid: str) -> None:
        """Write the reservation change, keeping the usage counters in step. A change to the same
        object (same UID) keeps `created_at`: the time it was admitted (or released from the queue)."""
        if decision.release or decision.reserve is not None or decision.hold_s:
            self.write(key, decision, self.target(key), now=now, request_uid=request_uid)

    def write(self, key: TargetKey, decision: Decision, old: Target | None, *, now: float, request_uid: str) -> None:
        """`apply` over `old`, the record of `key` as this transaction read it."""
        if decision.hold_s > 0 and decision.reserve is None:
            # Gone from the API (or about to be: an eviction), still running on its node: the
            # record keeps its charge (and the root's pods their sum) until the grace period is
            # over; the reconcile drops it then, or with the pod's final DELETE if it is seen.
            if old is not None:
                self.db.run("UPDATE reservations SET hold_until = ? WHERE resource = ? AND namespace = ? "
                            "AND name = ?", (now + decision.hold_s, *key))
            return
        if not decision.release and decision.reserve is None:
            return
        r = decision.reserve
        if r is not None and r.charged and old is not None and old.charged and r.uid and r.uid == r.root_uid \
                and (r.gpus < old.gpus or asked(old.shape) is not None):
            gpus, shape = held_charge(r.shape, r.gpus, self.pods_under(r.uid, None))
            r = replace(r, gpus=gpus, shape=shape)
        if old is not None and old.charged:
            self.count(old.owner, old.team, -old.gpus)
            self.db.run("UPDATE usage_intervals SET ended_at = ? WHERE resource = ? AND namespace = ? "
                        "AND name = ? AND ended_at IS NULL", (now, *key))
        if decision.release:
            if old is not None and old.charged and old.uid and old.is_root:
                self.charge_pods_of(old, now=now)
            if old is not None and old.uid and key[0] != "pods":
                # Its controllers may still act on it from their caches: what they make for it
                # now names a UID the ledger must not take for one it never knew.
                self.db.run("INSERT INTO gone_parents (uid, gone_at) VALUES (?, ?) ON CONFLICT (uid) DO NOTHING",
                            (old.uid, now))
                self.db.run("DELETE FROM gone_parents WHERE gone_at < ?", (now - GONE_PARENT_TTL_S,))
            self.db.run("DELETE FROM reservations WHERE resource = ? AND namespace = ? AND name = ?", key)
            self.db.run("DELETE FROM queue WHERE resource = ? AND namespace = ? AND name = ?", key)
            self.db.run("DELETE FROM refs WHERE resource = ? AND namespace = ? AND name = ?", key)
            if old is not None and key[0] == "pods" and not old.is_root:
                self.settle(old.root_uid, now=now)
            return
        assert r is not None
        if r.refs is not None:
            self.set_refs(key, r.refs, fresh=old is None)
        if r.charged:
            self.count(r.owner, r.team, r.gpus)
            if r.gpus:
                self.db.run("INSERT INTO usage_intervals (resource, namespace, name, owner, team, role, gpus, "
                            "started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, r.owner, r.team, r.role, r.gpus, now))
        self.db.run(
            "INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, shape, "
            "created_at, request_uid, uid, root_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (resource, namespace, name) DO UPDATE SET owner = excluded.owner, "
            "team = excluded.team, role = excluded.role, gpus = excluded.gpus, charged = excluded.charged, "
            "shape = excluded.shape, request_uid = excluded.request_uid, uid = excluded.uid, "
            "root_uid = excluded.root_uid, hold_until = NULL, created_at = CASE WHEN excluded.uid <> '' "
            "AND reservations.uid = excluded.uid THEN reservations.created_at ELSE excluded.created_at END",
            (*key, r.owner, r.team, r.role, r.gpus, int(r.charged), r.shape, now, request_uid, r.uid, r.root_uid),
        )
        if not r.charged and old is not None:  # a queued workload changed: it waits for its new size
            self.requeue(key, r, old)
        if old is not None and key[0] == "pods" and not old.is_root and r.gpus < old.gpus:
            self.settle(old.root_uid, now=now)

    def charge_pods_of(self, root: Target, *, now: float) -> None:
        """The root `root` is gone while pods recorded under it may still run (they run out their
        grace period after the root's deletion): each such pod's record now holds its own GPUs
        as a charge on the same owner, until the pod is gone."""
        pods = "FROM reservations WHERE root_uid = ? AND uid <> ? AND resource = 'pods' AND charged = 0 AND gpus > 0"
        held = self.db.all(f"SELECT owner, team, SUM(gpus) AS gpus {pods} GROUP BY owner, team", (root.uid, root.uid))
        if not held:
            return
        for row in held:
            self.count(row["owner"], row["team"], int(row["gpus"]))
        self.db.run("INSERT INTO usage_intervals (resource, namespace, name, owner, team, role, gpus, started_at) "
                    f"SELECT resource, namespace, name, owner, team, role, gpus, ? {pods}", (now, root.uid, root.uid))
        self.db.run("UPDATE reservations SET charged = 1 WHERE root_uid = ? AND uid <> ? AND resource = 'pods' "
                    "AND charged = 0 AND gpus > 0", (root.uid, root.uid))

    def settle(self, root_uid: str, *, now: float) -> None:
        """A pod under the root `root_uid` ended or let go of its GPUs: a charge held above what
        the root asks for (`held_charge`) comes down to what its pods still hold."""
        row = self.db.one("SELECT resource, namespace, name, owner, team, role, gpus, charged, shape, uid, "
                          "root_uid, 0 AS waiting FROM reservations WHERE uid = ?", (root_uid,)) if root_uid else None
        root = _target(row)
        if row is None or root is None or not root.charged or asked(root.shape) is None:
            return
        lowered = Reservation(root.owner, root.team, root.role, asked(root.shape) or 0, True, root.shape,
                              uid=root.uid, root_uid=root.root_uid)
        if held_charge(root.shape, lowered.gpus, self.pods_under(root.uid, None))[0] < root.gpus:
            self.write((row["resource"], row["namespace"], row["name"]), Decision(
                allowed=True, rule="reconcile", reason="", reserve=lowered), root, now=now, request_uid="")

    def set_refs(self, key: TargetKey, refs: Sequence[tuple[str, str]], *, fresh: bool = False) -> None:
        """Keep (resource key, name) of what the workload `key` references, and nothing else.
        `fresh`: `key` has no reservation, so no rows (every path that drops a reservation drops
        its rows). Rows whose reservation goes by another path are ignored by `referrers` (it joins them)."""
        if not fresh:
            self.db.run("DELETE FROM refs WHERE resource = ? AND namespace = ? AND name = ?", key)
        rows = list(dict.fromkeys(refs))
        for start in range(0, len(rows), _KEYS_PER_STATEMENT):  # one statement for a workload's names
            chunk = rows[start:start + _KEYS_PER_STATEMENT]
            self.db.run("INSERT INTO refs (namespace, ref_resource, ref_name, resource, name) VALUES "
                        + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                        [v for kind, name in chunk for v in (key[1], kind, name, key[0], key[2])])

    def requeue(self, key: TargetKey, new: Reservation, old: Target) -> None:
        """A queued workload changed size: it waits for its new GPUs and pods (a gang smaller
        than its whole, `gpu-gateway.io/min-pods`, stays so, within the new size)."""
        row = self.db.one("SELECT pods FROM queue WHERE resource = ? AND namespace = ? AND name = ?", key)
        if row is None:
            return
        old_total, new_total = gang_pods(old.shape), gang_pods(new.shape)
        pods = new_total if int(row["pods"]) >= old_total else min(int(row["pods"]), new_total)
        self.db.run("UPDATE queue SET gpus = ?, pods = ? WHERE resource = ? AND namespace = ? AND name = ?",
                    (new.gpus, pods, *key))

    def spent_budgets(self, query: BudgetQuery, now: float) -> tuple[str, ...]:
        """The budgets of `query` spent: GPU-hours of the user and the team since the period began."""
        rows = self.db.all(
            "SELECT owner, team, gpus, started_at, ended_at FROM usage_intervals WHERE (owner = ? OR team = ?) "
            "AND (ended_at IS NULL OR ended_at > ?)", (query.user, query.team, query.since))
        user = team = 0.0
        for r in rows:
            end = now if r["ended_at"] is None else min(float(r["ended_at"]), now)
            hours = int(r["gpus"]) * max(end - max(float(r["started_at"]), query.since), 0.0) / 3600
            user += hours if r["owner"] == query.user else 0.0
            team += hours if query.team and r["team"] == query.team else 0.0
        return spent_budgets(query, user, team)

    def enqueue(self, key: TargetKey, decision: Decision, *, now: float, request_uid: str) -> None:
        """Record a launch admitted in queue mode as waiting (gateway.store.queue runs the queue)."""
        q, r = decision.enqueue, decision.reserve
        assert q is not None and r is not None
        self.db.run(
            "INSERT INTO queue (resource, namespace, name, owner, team, role, gpus, pods, priority, priority_class, "
            "arrival, position, reason, request_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) "
            "ON CONFLICT (resource, namespace, name) DO UPDATE SET gpus = excluded.gpus, pods = excluded.pods",
            (*key, r.owner, r.team, r.role, r.gpus, q.pods, q.priority, q.priority_class, now, q.reason, request_uid),
        )

    def count(self, owner: str, team: str, delta: int) -> None:
        """Add `delta` GPUs to the owner's and the team's counters, in one statement."""
        rows = [(scope, name, delta) for scope, name in (("user", owner), ("team", team)) if name] if delta else []
        if rows:
            self.db.run(
                f"INSERT INTO usage (scope, name, gpus) VALUES {', '.join(['(?, ?, ?)'] * len(rows))} "
                "ON CONFLICT (scope, name) DO UPDATE SET gpus = usage.gpus + excluded.gpus",
                [value for row in rows for value in row],
            )

    def rebuild_usage(self) -> None:
        for statement in REBUILD_USAGE:
            self.db.run(statement)

    def append_audit(self, fields: dict[str, Any], *, now: float, dry_run: bool) -> tuple[int, str]:
        """Append one record to the chain; the head (count, last hash) after it."""
        if self._batch and self._head is not None:
            count, prev = self._head
        else:
            head = self.db.one(_HEAD)
            count, prev = (head["count"], head["last_hash"]) if head else (0, GENESIS)
        row = {**LATER_FIELDS, **fields}
        # ts is hashed as stored: the float column reads an int clock back as a float.
        row.update(seq=count + 1, ts=float(now), dry_run=int(dry_run))
        row["hash"] = row_hash(prev, row)
        row["prev_hash"] = prev
        self.db.run(_INSERT_AUDIT, tuple(row[c] for c in AUDIT_COLUMNS))
        if self._batch:
            self._head, self._head_dirty = (int(row["seq"]), str(row["hash"])), True
        else:
            self.db.run(_SET_HEAD, (row["seq"], row["hash"]))
        return int(row["seq"]), str(row["hash"])

    # ------------------------------------------------------------- audit and ledger views

    def audit_rows(self, query: AuditQuery) -> list[dict[str, Any]]:
        where, args = audit_filters(query)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [audit_record(row) for row in self.db.all(sql, args)]

    def verify(self) -> VerifyResult:
        head = self.db.one(_HEAD)
        rows = self.db.all("SELECT * FROM audit ORDER BY seq")
        return verify_rows(
            (dict(r) for r in rows),
            head["count"] if head else 0,
            head["last_hash"] if head else None,
        )

    def reservations(self) -> list[LedgerRow]:
        return [
            LedgerRow(r["resource"], r["namespace"], r["name"], r["owner"], r["team"], r["role"],
                      r["gpus"], bool(r["charged"]), r["created_at"], r["request_uid"],
                      json.loads(r["shape"] or "{}"))
            for r in self.db.all("SELECT * FROM reservations ORDER BY created_at")
        ]

    def gpu_hours(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """GPU-hours held in [since, until) per user, team and role, from admission to release."""
        rows = self.db.all(
            "SELECT owner, team, role, gpus, started_at, ended_at FROM usage_intervals "
            "WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?)", (until, since))
        out: dict[str, dict[str, float]] = {"users": {}, "teams": {}, "roles": {}}
        for r in rows:
            end = until if r["ended_at"] is None else min(float(r["ended_at"]), until)
            hours = int(r["gpus"]) * max(end - max(float(r["started_at"]), since), 0.0) / 3600
            for scope, name in (("users", r["owner"]), ("teams", r["team"]), ("roles", r["role"])):
                if name:
                    out[scope][name] = out[scope].get(name, 0.0) + hours
        return {scope: {k: round(v, 6) for k, v in names.items()} for scope, names in out.items()}

    def gpus_by_scope(self, scope: str) -> dict[str, int]:
        """Charged GPUs now per user (`scope` 'user') or per team ('team')."""
        rows = self.db.all("SELECT name, gpus FROM usage WHERE scope = ?", (scope,))
        return {r["name"]: int(r["gpus"]) for r in rows}

    def owner_roles(self) -> dict[str, str]:
        """The role each owner of charged GPUs had at their newest admission (caps per user
        follow the role; the ledger knows no groups)."""
        rows = self.db.all("SELECT owner, role FROM reservations WHERE charged = 1 AND owner != '' "
                           "ORDER BY created_at")
        return {r["owner"]: r["role"] for r in rows}


def _target(row: Row | None) -> Target | None:
    if row is None:
        return None
    return Target(row["owner"], row["team"], row["role"], row["gpus"], bool(row["charged"]), row["shape"],
                  row["uid"], row["root_uid"], waiting=bool(row["waiting"]))


def state_change(old: str, new: str) -> dict[str, Any]:
    """One entry of an audit record's `changes`: the state an approval or grant moved between."""
    return {"field": "state", "change": "changed" if old else "added", "old": old, "new": new}


def change_record(row: Row, *, kind: str, action: str, actor: Actor, request_uid: str, reason: str,
                  changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit fields of a change to an approval (`row` of approvals) or a grant (of grants)."""
    is_grant = kind == "Grant"
    return {
        "request_uid": request_uid, "user": actor.user, "groups": json.dumps(list(actor.groups)),
        "role": actor.role, "action": action, "kind": kind,
        "namespace": "" if is_grant else row["namespace"],
        "name": row["user"] if is_grant else f"{row['kind']}/{row['name']}",
        "object_uid": row["id"], "gpus": 0 if is_grant else int(row["gpus"]),
        "decision": "allowed", "mode": "enforce",
        "rule": "break-glass" if is_grant else "approval", "reason": reason,
        "policy_version": "", "owner": row["user"] if is_grant else row["requester"], "team": "",
        "changes": json.dumps(changes, sort_keys=True),
    }


def audit_record(row: Row) -> dict[str, Any]:
    """An audit row as the API and CLI show it: groups and changes decoded, dry_run a bool."""
    out = dict(row)
    out["groups"] = json.loads(out["groups"])
    out["dry_run"] = bool(out["dry_run"])
    # A read-only state file of an earlier version has no `changes` column.
    out["changes"] = json.loads(out.get("changes") or "[]")
    return out


def audit_filters(query: AuditQuery) -> tuple[list[str], list[Any]]:
    """SQL conditions (joined with AND) and their arguments for `query`."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("user", query.user), ("action", query.action), ("decision", query.decision),
                          ("namespace", query.namespace), ("name", query.name)):
        if value is not None:
            where.append(f"{_quote(column)} = ?")
            args.append(value)
    if query.kind is not None:
        # The kind (`PyTorchJob`) or, for /scale records, the resource (`pytorchjobs.kubeflow.org`).
        names = kind_names(query.kind)
        exact = f"LOWER(kind) IN ({', '.join('?' for _ in names)})"
        scaled = " OR ".join("LOWER(kind) LIKE ? ESCAPE '!'" for _ in names)
        where.append(f"({exact} OR {scaled})")
        args += [*names, *(_like_escape(n) + ".%" for n in names)]
    if query.after is not None:
        where.append("seq > ?")
        args.append(query.after)
    if query.since is not None:
        where.append("ts >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("ts < ?")
        args.append(query.until)
    return where, args


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
