"""A batch of admissions in one transaction, each failure its own, without a savepoint per job.

Both backends decide a group commit's jobs one after another in one transaction. A job that
fails (a bug, a statement the database refuses) must fail alone. Instead of a savepoint
around each job (two statements each, on every request), the backend rolls the transaction
back and `decide_each` runs the batch again without the failed job. Jobs are deterministic
(each carries its clock), so the others are decided as they were; failures are rare, so
the retries cost nothing in the usual case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.admission.decision import Decision
from gateway.store.types import Job

Outcome = Decision | BaseException


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job at `index` of an attempt failed with `error`; the attempt's transaction was rolled back."""

    index: int
    error: BaseException


def decide_each(jobs: Sequence[Job], attempt: Callable[[Sequence[Job]], list[Outcome] | JobFailed]) -> list[Outcome]:
    """Each job's outcome, in order: `attempt` (one transaction over the jobs it is given) is run
    over the jobs not failed yet until it returns their outcomes."""
    failed: dict[int, BaseException] = {}
    while True:
        live = [i for i in range(len(jobs)) if i not in failed]
        decided = attempt([jobs[i] for i in live]) if live else []
        if isinstance(decided, JobFailed):
            failed[live[decided.index]] = decided.error
            continue
        outcomes = dict(zip(live, decided, strict=True)) | failed
        return [outcomes[i] for i in range(len(jobs))]
