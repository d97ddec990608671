"""The comparison of the log with its signed checkpoints (gateway.audit.checkpoints), as properties:
an untouched log always passes, and after truncation or a rewrite the first untrusted record is
never after the first record that was changed or lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.checkpoints import Checkpoint, LogHead, Rejected, Signed, checkpoint_from, compare


def log_of(n: int, tag: str = "a") -> list[LogHead]:
    return [LogHead(i, f"{tag}{i:063d}", 1000.0 + i) for i in range(1, n + 1)]


def signed(log: list[LogHead], seqs: list[int], replica: str = "r") -> list[Signed]:
    return [Signed(Checkpoint(replica, s, log[s - 1].hash, 1000.5 + s, 60), f"f:{i + 1}", i + 1)
            for i, s in enumerate(sorted(seqs))]


logs = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(min_value=1, max_value=n), min_size=1, max_size=8)))


@given(logs)
def test_an_untouched_log_matches_its_checkpoints(case):
    n, seqs = case
    log = log_of(n)
    verdict = compare(log, signed(log, seqs))
    assert verdict.ok and verdict.covered == max(seqs) and verdict.first_untrusted is None


@given(logs, st.data())
def test_truncation_is_named_at_the_first_missing_record(case, data):
    n, seqs = case
    log = log_of(n)
    keep = data.draw(st.integers(min_value=0, max_value=max(seqs) - 1))
    verdict = compare(log[:keep], signed(log, seqs))
    assert not verdict.ok and verdict.first_untrusted == keep + 1
    assert f"to {max(seqs)} were deleted" in verdict.problem


@given(logs, st.data())
def test_a_rewrite_is_never_trusted_past_the_first_changed_record(case, data):
    n, seqs = case
    log = log_of(n)
    first_changed = data.draw(st.integers(min_value=1, max_value=max(seqs)))
    rewritten = log[: first_changed - 1] + [LogHead(h.seq, "b" + h.hash[1:], h.ts) for h in log[first_changed - 1:]]
    verdict = compare(rewritten, signed(log, seqs))
    assert not verdict.ok
    assert verdict.first_untrusted is not None and verdict.first_untrusted <= first_changed
    assert verdict.first_untrusted == max([s for s in seqs if s < first_changed], default=0) + 1


def test_a_fork_is_named_after_the_last_record_both_replicas_agree_on():
    ours, theirs = log_of(10, "a"), log_of(4, "a") + log_of(10, "b")[4:]
    verdict = compare(ours, signed(ours, [2, 4, 8], "a") + signed(theirs, [4, 8], "b"))
    assert not verdict.ok and verdict.first_untrusted == 5 and "forked after record 4" in verdict.problem


def test_a_rejected_line_is_untrusted_from_the_last_match_before_it():
    log = log_of(10)
    good = signed(log, [3, 6, 9])
    verdict = compare(log, good, [Rejected("f:2", 2, "bad signature")])
    assert not verdict.ok and verdict.first_untrusted == 4 and verdict.untrusted_since == 1003.5


def test_checkpoint_fields_are_read_strictly():
    cp = Checkpoint("r", 3, "h" * 64, 1.0, 60.0)
    assert checkpoint_from(cp.as_dict()) == cp
    for broken in ({**cp.as_dict(), "seq": "3"}, {**cp.as_dict(), "seq": True}, {**cp.as_dict(), "format": 2},
                   {**cp.as_dict(), "seq": -1}, [], None):
        try:
            checkpoint_from(broken)
        except ValueError:
            continue
        raise AssertionError(f"accepted {broken!r}")
