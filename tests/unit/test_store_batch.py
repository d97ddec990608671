"""`decide_each`: a batch whose job fails is decided again without it, each job then in a
savepoint of its own: every failure its own, and never more than two attempts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.batch import JobFailed, Outcome, decide_each


@given(size=st.integers(0, 12), failing=st.sets(st.integers(0, 11)))
def test_each_failing_job_fails_alone_in_at_most_two_attempts(size: int, failing: set[int]) -> None:
    jobs: list[Any] = list(range(size))
    attempts: list[tuple[list[int], bool]] = []

    def attempt(live: Sequence[Any], isolate: bool) -> list[Outcome] | JobFailed:
        attempts.append((list(live), isolate))
        if not isolate:
            for index, job in enumerate(live):
                if job in failing:
                    return JobFailed(index, RuntimeError(f"job {job}"))
        # each outcome stands for the job's Decision, or its error in its savepoint
        return [RuntimeError(f"job {job}" if job in failing else f"decided {job}") for job in live]

    outcomes = decide_each(jobs, attempt)
    assert [str(o) for o in outcomes] == [f"job {j}" if j in failing else f"decided {j}" for j in jobs]
    first_failure = next((j for j in jobs if j in failing), None)
    if first_failure is None:
        assert attempts == [(jobs, False)]
    else:
        assert attempts == [(jobs, False), ([j for j in jobs if j != first_failure], True)]
