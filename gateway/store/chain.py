"""The audit hash chain: `hash = sha256(prev_hash || canonical_json(row))`.

Every row carries its sequence number and the hash of the row before it, so editing,
deleting, inserting or reordering rows breaks the chain at the first row touched. The
store also keeps a head (row count and last hash), which catches a truncated tail.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from gateway.audit.ports import VerifyResult
from gateway.store.migrations import AddColumn, Migration, Subject, statements

#: The audit chain's tables: the records, and the head (count and last hash) appends extend.
#: A state file older than `changes` gets it, empty, which the hash leaves out.
AUDIT_SCHEMA = Subject("audit", (
    Migration(1, (*statements("""
CREATE TABLE IF NOT EXISTS audit (
    seq            {seq} PRIMARY KEY,
    ts             {float} NOT NULL,
    request_uid    TEXT NOT NULL,
    "user"         TEXT NOT NULL,
    "groups"       TEXT NOT NULL,
    role           TEXT NOT NULL,
    action         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    object_uid     TEXT NOT NULL,
    gpus           INTEGER NOT NULL,
    decision       TEXT NOT NULL,
    mode           TEXT NOT NULL,
    rule           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    dry_run        INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    owner          TEXT NOT NULL,
    team           TEXT NOT NULL,
    changes        TEXT NOT NULL DEFAULT '[]',
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit ("user", ts);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_object ON audit (namespace, name);
CREATE TABLE IF NOT EXISTS audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    count     {seq} NOT NULL,
    last_hash TEXT NOT NULL
);
"""),
        AddColumn("audit", "changes", "TEXT NOT NULL DEFAULT '[]'"),
    )),
))

GENESIS = "0" * 64

_FIRST_FIELDS = (
    "seq", "ts", "request_uid", "user", "groups", "role", "action", "kind", "namespace",
    "name", "object_uid", "gpus", "decision", "mode", "rule", "reason", "dry_run",
    "policy_version", "owner", "team",
)

#: Fields added after the first version of the chain, with their empty value. A record whose
#: field is empty (or absent) is hashed without it, exactly as before the field existed, so
#: logs written by earlier versions still verify; any other value is hashed like every field.
LATER_FIELDS = {"changes": "[]"}

#: The audit columns covered by the hash. A new one goes into LATER_FIELDS, with its empty value.
AUDIT_FIELDS = (*_FIRST_FIELDS, *LATER_FIELDS)


def canonical(row: Mapping[str, Any]) -> bytes:
    record = {k: row[k] for k in _FIRST_FIELDS}
    for k, empty in LATER_FIELDS.items():
        value = row.get(k, empty)
        if value != empty:
            record[k] = value
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(row)).hexdigest()


def verify_rows(
    rows: Iterable[Mapping[str, Any]], head_count: int | None, head_hash: str | None
) -> VerifyResult:
    """Walk rows in sequence order and name the first bad one.

    A record that does not link to the one before it is not always the culprit: a record
    edited and then re-hashed still verifies on its own, and the break shows at the next
    one. `_blame` looks at the record where the chain breaks to name the first record that
    is not genuine.
    """
    prev = GENESIS
    recent: deque[str] = deque([GENESIS], maxlen=_LOOKBACK)  # hashes of the last good records
    count = 0
    for expected_seq, row in enumerate(rows, start=1):
        count = expected_seq
        try:
            actual = row_hash(prev, row)
        except (KeyError, TypeError) as exc:
            return VerifyResult(False, count, expected_seq, f"record is malformed: {exc}")
        if row.get("seq") == expected_seq and row.get("prev_hash") == prev and row.get("hash") == actual:
            prev = actual
            recent.append(actual)
            continue
        first_bad, problem = _blame(row, expected_seq, recent)
        return VerifyResult(False, count, first_bad, problem)
    if head_count is not None and head_count != count:
        return VerifyResult(False, count, min(head_count, count) + 1,
                            f"the log should hold {head_count} records but holds {count} "
                            "(records after the last one were deleted, or added outside the gateway)")
    if head_hash is not None and count and head_hash != prev:
        return VerifyResult(False, count, count, "the last record is not the one the head points to")
    return VerifyResult(True, count)


#: How many verified hashes `verify_rows` keeps to recognise records inserted before a genuine one.
_LOOKBACK = 1024


def _self_hash(prev_hash: Any, row: Mapping[str, Any], **changes: Any) -> str | None:
    """The hash `row` would have if chained to `prev_hash` (with `changes`), None if it cannot."""
    try:
        return row_hash(str(prev_hash), {**row, **changes})
    except (KeyError, TypeError):
        return None


def _blame(row: Mapping[str, Any], position: int, recent: deque[str]) -> tuple[int, str]:
    """Row at `position` breaks the chain: (first bad record, why)."""
    seq, prev_hash, stored = row.get("seq"), row.get("prev_hash"), row.get("hash")
    known = list(recent)
    # A genuine record, renumbered or not, linking to an earlier record than the one before it:
    # everything in between was inserted.
    if stored not in known and prev_hash in known[:-1]:
        linked = len(known) - 1 - known[::-1].index(prev_hash)
        genuine_seq = position - (len(known) - 1 - linked)
        if _self_hash(prev_hash, row, seq=genuine_seq) == stored:
            return genuine_seq, (f"{position - genuine_seq} record(s) inserted at {genuine_seq}: "
                                 f"the record at position {position} is the genuine record {genuine_seq}")
    if seq != position:
        return position, (f"expected record {position} here, found record {seq} "
                          "(a record was deleted, inserted or moved)")
    if prev_hash != known[-1]:
        if position > 1 and stored not in known and _self_hash(prev_hash, row) == stored:
            return position - 1, (f"record {position} is intact but was chained to a different "
                                  f"record {position - 1} (its contents were changed and re-hashed)")
        return position, ("prev_hash does not match the record before it "
                          "(a record before it was deleted, inserted or changed)")
    return position, "contents do not match its hash (edited)"
