"""Group commit in front of the store, with a decision budget.

Requests that need the ledger are queued; one batch decides everything queued in one
transaction (one disk sync for the batch) and resolves each request's future after the
commit, so no answer goes out before its audit record is durable.

Where the batch runs: on the event loop itself for the local SQLite file (keeps the GIL
from bouncing between a writer and the requests that pass straight through), or, with
`offload`, on one writer thread for PostgreSQL, whose round trips can stall (a slow or
lost database) and must not freeze the loop: requests that need no ledger keep flowing,
and those that do are answered by the failure policy when their budget runs out.

A request submitted with a deadline is either committed or abandoned, never both: right
before COMMIT the writer claims every job of the batch under a lock; a job whose caller
gave up (or whose deadline passed) cannot be claimed, and then the whole transaction is
rolled back and redone without it. A caller whose job was already claimed waits for the
commit's outcome (at most `commit_grace_s` more), since that outcome is its answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from gateway.admission.decision import Decision
from gateway.errors import StoreError
from gateway.store.base import Store
from gateway.store.types import Job

log = logging.getLogger("gateway.store")

_QUEUED, _COMMITTING, _ABANDONED = "queued", "committing", "abandoned"


class LateDecision(StoreError):
    """The decision budget ran out before the request's transaction committed; nothing was written."""


@dataclass(slots=True)
class _Pending:
    job: Job
    future: asyncio.Future[Decision]
    deadline: float
    state: str = _QUEUED
    outcome: Decision | BaseException | None = None


async def _within(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Decision], timeout_s: float) -> bool:
    """Wait for `future` at most `timeout_s`; whether it is done. Never cancels it. A timer and a
    plain future, where `asyncio.wait_for(asyncio.shield(...))` would start two tasks per request."""
    if future.done():
        return True
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    timer = loop.call_later(timeout_s, wake)
    future.add_done_callback(wake)
    try:
        await woken
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


def _consume(future: asyncio.Future[Decision]) -> None:
    """Retrieve the outcome of a future nobody awaits any more (no 'never retrieved' noise)."""
    if not future.cancelled():
        future.exception()


#: Loop iterations a batch on the event loop waits before it commits, so that the requests
#: already read join it: each COMMIT (a disk sync) costs the process far more CPU than a
#: request's statements, and batches of 2-4 became 10 or so on the all-launch benchmark
#: (about a fifth less CPU per GPU decision); with nothing else to run, an iteration takes
#: microseconds.
DEFER_ITERATIONS = 2


class StoreWriter:
    def __init__(self, store: Store, *, max_batch: int = 256, offload: bool = False,
                 commit_grace_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.max_batch = max_batch
        self.commit_grace_s = commit_grace_s
        self.clock = clock
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._running = False
        self._claims = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store-writer") if offload else None
        self._busy = False
        self._deferred = 0

    @property
    def offloaded(self) -> bool:
        return self._executor is not None

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        """Refuse new work; what is queued is still decided by its scheduled batch."""
        self._running = False

    def close(self) -> None:
        """Stop, and wait for the batch under way on the writer thread (nothing is left half-done)."""
        self.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, job: Job, *, deadline: float | None = None) -> Decision:
        """Decide `job`; with `deadline` (on `clock`), raise LateDecision if it is not claimed for commit by then."""
        if not self._running:
            raise StoreError("the store writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        future.add_done_callback(_consume)
        pending = _Pending(job, future, math.inf if deadline is None else deadline)
        self._pending.append(pending)
        self._kick(loop)
        if deadline is None:
            return await future
        if await _within(loop, future, max(0.0, deadline - self.clock())):
            return future.result()
        with self._claims:
            if pending.state == _QUEUED:
                pending.state = _ABANDONED
                raise LateDecision("the decision budget ran out before the database answered; "
                                   "nothing was written")
        # claimed: the commit is under way and its outcome is the answer
        if await _within(loop, future, self.commit_grace_s):
            return future.result()
        log.error("a commit outlived the decision budget and its grace; its outcome is unknown "
                  "(request %s)", job.request_uid)
        raise StoreError("the database did not confirm the commit in time; outcome unknown")

    # ------------------------------------------------------------- batches

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._executor is None:
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush, loop)
            return
        if self._busy or not self._pending:
            return
        self._busy = True
        batch = self._take()
        try:
            done: Future[None] = self._executor.submit(self._decide, batch)
        except RuntimeError:  # closed: nothing more is decided
            self._busy = False
            for p in batch:
                p.outcome = StoreError("the store writer is closed")
            self._resolve(batch)
            return
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._after_thread, loop, batch))

    def _take(self) -> list[_Pending]:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        return batch

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if len(self._pending) < self.max_batch and self._deferred < DEFER_ITERATIONS:
            # Let the loop first read what has already arrived: a request whose bytes are in a
            # socket buffer reaches `submit` two iterations later, and then joins this commit.
            self._deferred += 1
            loop.call_soon(self._flush, loop)
            return
        self._deferred = 0
        batch = self._take()
        self._scheduled = bool(self._pending)
        if self._scheduled:
            loop.call_soon(self._flush, loop)
        self._decide(batch)
        self._resolve(batch)

    def _after_thread(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        self._busy = False
        self._resolve(batch)
        self._kick(loop)

    def _decide(self, batch: list[_Pending]) -> None:
        """Decide the live jobs of `batch`, storing each outcome on its pending entry (any thread)."""
        live = self._still_wanted(batch)
        while live:
            claimed: list[bool] = []
            try:
                outcomes = self.store.decide_batch([p.job for p in live],
                                                   ready_to_commit=functools.partial(self._claim, live, claimed))
            except Exception as exc:  # the store must never leave a request unanswered
                log.exception("store batch failed")
                outcomes = [StoreError(str(exc)) for _ in live]
            if claimed == [False]:  # rolled back for a late job: redo the others without it
                live = self._still_wanted(live)
                continue
            for p, outcome in zip(live, outcomes, strict=True):
                p.outcome = outcome
            return

    def _claim(self, jobs: list[_Pending], claimed: list[bool]) -> bool:
        """Right before COMMIT: claim every job, or none if one of them is late (noted in `claimed`)."""
        with self._claims:
            now = self.clock()
            late = [p for p in jobs if p.state == _ABANDONED or now >= p.deadline]
            for p in late:
                p.state = _ABANDONED
            if not late:
                for p in jobs:
                    p.state = _COMMITTING
            claimed.append(not late)
            return not late

    def _still_wanted(self, batch: list[_Pending]) -> list[_Pending]:
        with self._claims:
            now = self.clock()
            for p in batch:
                if p.state == _QUEUED and now >= p.deadline:
                    p.state = _ABANDONED
            return [p for p in batch if p.state != _ABANDONED]

    @staticmethod
    def _resolve(batch: list[_Pending]) -> None:
        for p in batch:
            if p.future.done():
                continue
            outcome = p.outcome
            if p.state == _ABANDONED or outcome is None:
                p.future.set_exception(LateDecision("the decision budget ran out before the commit; "
                                                    "nothing was written"))
            elif isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)
