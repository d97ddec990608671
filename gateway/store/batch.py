"""A batch of admissions in one transaction, each failure its own, without a savepoint per job.

Both backends decide a group commit's jobs one after another in one transaction. A job that
fails (a bug, a statement the database refuses) must fail alone. A savepoint around each job
would cost every request two statements. Instead, `decide_each` runs the batch without them,
and only if a job fails is the transaction rolled back and the batch decided again without
it. That second attempt puts each job in a savepoint of its own, so further failing jobs
cost no more attempts: at most two per batch, never one per failure.

Jobs are deterministic (each carries its clock), so the others are decided again as they
were. Failures are rare, so the usual batch pays nothing for this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.admission.decision import Decision
from gateway.store.sql import Ledger
from gateway.store.types import Job

Outcome = Decision | BaseException


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job at `index` of an attempt failed with `error`; the attempt's transaction is to be rolled back."""

    index: int
    error: BaseException


def decide_each(jobs: Sequence[Job],
                attempt: Callable[[Sequence[Job], bool], list[Outcome] | JobFailed]) -> list[Outcome]:
    """Each job's outcome, in order. `attempt(jobs, isolate)` runs one transaction over `jobs`;
    with `isolate`, each job in a savepoint, so that it never returns a JobFailed."""
    decided = attempt(jobs, False)
    if not isinstance(decided, JobFailed):
        return decided
    again = attempt([job for i, job in enumerate(jobs) if i != decided.index], True)
    if isinstance(again, JobFailed):  # an attempt that breaks its contract: fail the batch closed
        raise RuntimeError("a batch with each job in a savepoint reported a failed job")
    again.insert(decided.index, decided.error)
    return again


def decide_jobs(ledger: Ledger, jobs: Sequence[Job], *, isolate: bool, sync: Callable[[], None],
                error: Callable[[Exception], BaseException]) -> list[Outcome] | JobFailed:
    """Decide `jobs` in the open transaction, in order. `sync` waits until the job's statements
    are answered (PostgreSQL's pipeline), so that a refusal is the job's own; `error` is what
    a job's exception becomes. Without `isolate`, the first job that fails stops the attempt."""
    decisions: list[Outcome] = []
    for index, job in enumerate(jobs):
        if isolate:
            decisions.append(_decide_in_savepoint(ledger, job, sync, error))
            continue
        try:
            decisions.append(ledger.decide(job))
            sync()
        except Exception as exc:
            _resync(sync)
            return JobFailed(index, error(exc))
    return decisions


def _decide_in_savepoint(ledger: Ledger, job: Job, sync: Callable[[], None],
                         error: Callable[[Exception], BaseException]) -> Outcome:
    ledger.db.run("SAVEPOINT job")
    mark = ledger.chain_mark()
    try:
        decision = ledger.decide(job)
        sync()
    except Exception as exc:
        _resync(sync)
        ledger.chain_restore(mark)
        ledger.db.run("ROLLBACK TO SAVEPOINT job")
        ledger.db.run("RELEASE SAVEPOINT job")
        return error(exc)
    ledger.db.run("RELEASE SAVEPOINT job")
    return decision


def _resync(sync: Callable[[], None]) -> None:
    """After a job failed: a pipeline the database aborted runs nothing more, the rollback
    included, until a sync. The sync may report the same failure again: it is known already."""
    with contextlib.suppress(Exception):
        sync()
