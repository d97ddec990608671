"""Signed checkpoints of the audit chain, compared with the log: which records can be trusted.

A checkpoint is the chain head one replica saw at one time (sequence number and hash of the
last record), signed with a key kept outside the database. The hash chain alone catches an
edit in the middle of the log; a checkpoint also catches what the chain cannot: the newest
records deleted, or the whole chain rewritten and re-hashed by someone with write access to
the database but not the key. Two replicas that sign different hashes for one sequence
number mean the chain forked.

This module only compares: signatures are checked by the adapter (gateway.audit.signing.checkpointer),
which hands over the checkpoints that verify and the lines that do not.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

#: The version of the signed payload; a reader refuses others.
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a replica signs: the head of the chain it saw."""

    replica: str
    seq: int
    """Number of records in the log (the sequence number of the last one); 0 for an empty log."""
    hash: str
    """Hash of record `seq` (64 zeros for an empty log)."""
    ts: float
    """When it was signed (epoch seconds, the replica's clock)."""
    interval_s: float
    """How often the replica signs, so a reader can see a gap."""
    reason: str = "periodic"
    """`start`, `periodic` or `shutdown`."""

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON (sorted keys, no whitespace)."""
        return canonical_payload(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        # Numbers as floats whatever the caller passed, so the payload reads back byte for byte.
        return {"format": FORMAT, "replica": self.replica, "seq": self.seq, "hash": self.hash,
                "ts": float(self.ts), "interval_s": float(self.interval_s), "reason": self.reason}


def canonical_payload(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checkpoint_from(fields: Any) -> Checkpoint:
    """Read a checkpoint's fields (from a signed line); ValueError names what is wrong."""
    if not isinstance(fields, dict):
        raise ValueError("the checkpoint is not a JSON object")
    if fields.get("format") != FORMAT:
        raise ValueError(f"unknown checkpoint format {fields.get('format')!r}")
    replica, seq, hash_, ts = fields.get("replica"), fields.get("seq"), fields.get("hash"), fields.get("ts")
    interval, reason = fields.get("interval_s", 0), fields.get("reason", "periodic")
    if not isinstance(replica, str) or not isinstance(hash_, str) or not isinstance(reason, str):
        raise ValueError("replica, hash and reason must be strings")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError("seq must be a non-negative integer")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError("ts must be a number")
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError("interval_s must be a number")
    return Checkpoint(replica, seq, hash_, float(ts), float(interval), reason)


@dataclass(frozen=True, slots=True)
class Signed:
    """A checkpoint whose signature verified, and where it was read."""

    checkpoint: Checkpoint
    source: str
    """`FILE:LINE` (or the sink's name) it came from."""
    order: int
    """Position among everything read, in reading order (a file is appended in time order)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a checkpoint with a good signature: edited, forged or damaged."""

    source: str
    order: int
    why: str


@dataclass(frozen=True, slots=True)
class LogHead:
    """One record of the log as the comparison needs it."""

    seq: int
    hash: str
    ts: float


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int
    checkpoints: int
    """Checkpoints with a good signature that were compared."""
    replicas: tuple[str, ...] = ()
    first_untrusted: int | None = None
    """Sequence number of the first record the log can no longer be trusted from."""
    untrusted_since: float | None = None
    """Time since when it cannot be trusted (None: from the start of the log)."""
    problem: str = ""
    covered: int = 0
    """The highest record a matching checkpoint vouches for."""
    last_checkpoint: Checkpoint | None = None

    def describe(self) -> str:
        if self.ok:
            tail = self.records - self.covered
            last = self.last_checkpoint
            if last is None:
                return "checkpoints: none to compare"
            newer = f"; {tail} newer record(s) not yet covered" if tail else ""
            return (f"checkpoints: {self.checkpoints} signed checkpoint(s) from {len(self.replicas)} "
                    f"replica(s) match the log; the latest covers records 1-{self.covered} "
                    f"(signed by {last.replica} at {iso(last.ts)}){newer}")
        since = "the start of the log" if self.untrusted_since is None else iso(self.untrusted_since)
        return (f"audit log does not match its checkpoints: {self.problem}\n"
                f"the log cannot be trusted from record {self.first_untrusted} on (since {since})")

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "records": self.records, "checkpoints": self.checkpoints,
            "replicas": list(self.replicas), "first_untrusted": self.first_untrusted,
            "untrusted_since": None if self.untrusted_since is None else iso(self.untrusted_since),
            "problem": self.problem, "covered": self.covered,
        }


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def compare_with_chain(log: Sequence[LogHead], signed: Sequence[Signed], rejected: Sequence[Rejected],
                       chain_break: tuple[int, str] | None) -> Verdict:
    """`compare`, given where the hash chain itself broke (first bad record, why), if it did.

    A broken chain makes every record from the break on untrusted; the checkpoints then say
    since when, and may show an earlier point still.
    """
    if chain_break is None:
        return compare(log, signed, rejected)
    first, why = chain_break
    before = [s for s in signed if s.checkpoint.seq < first]
    verdict = compare(log[: first - 1], before, rejected)
    if not verdict.ok and verdict.problem != _NONE and (verdict.first_untrusted or first) < first:
        return replace(verdict, records=len(log), checkpoints=len(signed))
    return Verdict(False, len(log), len(signed), verdict.replicas, first, _trusted_time(before),
                   f"the hash chain is broken at record {first}: {why}", verdict.covered,
                   verdict.last_checkpoint)


def _trusted_time(signed: Sequence[Signed]) -> float | None:
    return max((s.checkpoint.ts for s in signed), default=None)


_NONE = "no signed checkpoints found"


def compare(log: Sequence[LogHead], signed: Sequence[Signed], rejected: Sequence[Rejected] = ()) -> Verdict:
    """Compare the log (already verified as a hash chain, in sequence order) with its checkpoints.

    Checkpoints are taken in order of the records they cover. Each must name a record the log
    still holds, with the same hash. The first that does not decides the verdict: the log is
    trusted up to the last record a matching checkpoint vouched for (the chain links every
    earlier record to it), and untrusted after it, since the time that checkpoint was signed.
    A line whose signature fails is untrusted from the last match read before it.
    """
    records = len(log)
    replicas = tuple(sorted({s.checkpoint.replica for s in signed}))
    ordered = sorted(signed, key=lambda s: (s.checkpoint.seq, s.checkpoint.ts, s.order))
    trusted_seq, trusted_ts = 0, None  # the last record a matching checkpoint vouched for, and when
    failure: tuple[int, float | None, str] | None = None
    last: Checkpoint | None = None
    for item in ordered:
        cp = item.checkpoint
        if cp.seq > records:
            latest = ordered[-1]  # the checkpoint that vouched for the most records
            failure = (records + 1, log[-1].ts if log else trusted_ts,
                       f"records {records + 1} to {latest.checkpoint.seq} were deleted: {_who(latest)} "
                       f"vouched for {latest.checkpoint.seq} records, the log ends at record {records}")
            break
        expected = log[cp.seq - 1].hash if cp.seq else _GENESIS
        if expected != cp.hash:
            # Only what checkpoints of earlier records vouched for stays trusted: another
            # checkpoint of this same record that matched the log is one side of a fork.
            earlier = [s.checkpoint for s in ordered if s.checkpoint.seq < cp.seq]
            trusted_seq = max((c.seq for c in earlier), default=0)
            trusted_ts = max((c.ts for c in earlier), default=None)
            other = next((s for s in ordered if s.checkpoint.seq == cp.seq and s.checkpoint.hash == expected), None)
            if other is not None:
                problem = (f"the chain forked after record {trusted_seq}: {_who(other)} signed record "
                           f"{cp.seq} as {other.checkpoint.hash[:16]}..., {_who(item)} as {cp.hash[:16]}...")
            else:
                problem = (f"record {cp.seq} is not the record {_who(item)} signed (hash "
                           f"{cp.hash[:16]}... signed, {expected[:16]}... in the log): the records "
                           f"after {trusted_seq} were rewritten, or the chain forked")
            failure = (trusted_seq + 1, trusted_ts, problem)
            break
        trusted_seq, trusted_ts, last = cp.seq, cp.ts if trusted_ts is None else max(trusted_ts, cp.ts), cp
    if rejected:
        bad = min(rejected, key=lambda r: r.order)
        before = [s for s in ordered if s.order < bad.order and s.checkpoint.seq <= trusted_seq]
        seq = max((s.checkpoint.seq for s in before), default=0)
        since = max((s.checkpoint.ts for s in before), default=None)
        candidate = (seq + 1, since, f"{bad.source}: {bad.why}")
        if failure is None or candidate[0] < failure[0]:
            failure = candidate
    if failure is not None:
        first, since, problem = failure
        return Verdict(False, records, len(signed), replicas, first, since, problem, trusted_seq, last)
    if not signed:
        return Verdict(False, records, 0, (), 1, None, _NONE, 0, None)
    return Verdict(True, records, len(signed), replicas, covered=trusted_seq, last_checkpoint=last)


_GENESIS = "0" * 64


def _who(item: Signed) -> str:
    cp = item.checkpoint
    return f"the checkpoint of replica {cp.replica} at {iso(cp.ts)} ({item.source})"
