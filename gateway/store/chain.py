"""The audit hash chain: `hash = sha256(prev_hash || canonical_json(row))`.

Every row carries its sequence number and the hash of the row before it, so editing,
deleting, inserting or reordering rows breaks the chain at the first row touched. The
store also keeps a head (row count and last hash), which catches a truncated tail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64

#: The audit columns covered by the hash, in order. Adding a column means a new chain version.
AUDIT_FIELDS = (
    "seq", "ts", "request_uid", "user", "groups", "role", "action", "kind", "namespace",
    "name", "object_uid", "gpus", "decision", "mode", "rule", "reason", "dry_run",
    "policy_version", "owner", "team",
)


def canonical(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps({k: row[k] for k in AUDIT_FIELDS}, option=orjson.OPT_SORT_KEYS)


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(row)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad: int | None = None
    """Sequence number of the first row that fails (or the position where one is missing)."""
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.rows} records verified"
        return f"audit chain broken at record {self.first_bad}: {self.problem}"


def verify_rows(
    rows: Iterable[Mapping[str, Any]], head_count: int | None, head_hash: str | None
) -> VerifyResult:
    """Walk rows in storage order (by rowid, not by seq) and name the first bad one."""
    prev = GENESIS
    count = 0
    for expected_seq, row in enumerate(rows, start=1):
        count = expected_seq
        seq = row.get("seq")
        if seq != expected_seq:
            return VerifyResult(False, count, expected_seq,
                                f"expected record {expected_seq} here, found record {seq} "
                                "(a record was deleted, inserted or moved)")
        if row.get("prev_hash") != prev:
            return VerifyResult(False, count, expected_seq,
                                "prev_hash does not match the record before it "
                                "(a record before it was deleted, inserted or changed)")
        try:
            actual = row_hash(prev, row)
        except (KeyError, TypeError) as exc:
            return VerifyResult(False, count, expected_seq, f"record is malformed: {exc}")
        if row.get("hash") != actual:
            return VerifyResult(False, count, expected_seq, "contents do not match its hash (edited)")
        prev = actual
    if head_count is not None and head_count != count:
        return VerifyResult(False, count, count + 1,
                            f"the log should hold {head_count} records but holds {count} "
                            "(records after the last one were deleted, or added outside the gateway)")
    if head_hash is not None and count and head_hash != prev:
        return VerifyResult(False, count, count, "the last record is not the one the head points to")
    return VerifyResult(True, count)
