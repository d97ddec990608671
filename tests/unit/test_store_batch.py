"""`decide_each`: a batch decided again without each job that fails, until one attempt passes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.batch import JobFailed, Outcome, decide_each


@given(size=st.integers(0, 12), failing=st.sets(st.integers(0, 11)))
def test_each_failing_job_fails_alone_and_the_others_are_decided_once_more_each_time(size: int,
                                                                                    failing: set[int]) -> None:
    jobs: list[Any] = list(range(size))
    attempts: list[list[int]] = []

    def attempt(live: Sequence[Any]) -> list[Outcome] | JobFailed:
        attempts.append(list(live))
        for index, job in enumerate(live):
            if job in failing:
                return JobFailed(index, RuntimeError(f"job {job}"))
        return [RuntimeError(f"decided {job}") for job in live]  # stands for each job's Decision

    outcomes = decide_each(jobs, attempt)
    assert [str(o) for o in outcomes] == [f"job {j}" if j in failing else f"decided {j}" for j in jobs]
    failed_here = sorted(j for j in jobs if j in failing)
    assert len(attempts) == len(failed_here) + (1 if len(failed_here) < size else 0)
    assert all(j not in a for n, j in enumerate(failed_here) for a in attempts[n + 1:]), "a failed job is not run again"
