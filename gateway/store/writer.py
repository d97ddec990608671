"""Group commit on the event loop, in front of the store.

Requests that need the ledger are queued; once the loop has handled what is ready, one
callback decides everything queued in one transaction (one disk sync for the batch) and
resolves each request's future after the commit, so no answer goes out before its audit
record is durable. Running on the loop itself, not on a thread, keeps the GIL from
bouncing between a writer and the requests that pass straight through.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.core.decision import Decision
from gateway.errors import StoreError
from gateway.store.base import Job, Store

log = logging.getLogger("gateway.store")


@dataclass(slots=True)
class _Pending:
    job: Job
    future: asyncio.Future[Decision]


class StoreWriter:
    def __init__(self, store: Store, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._running = False

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        """Refuse new work; what is queued is still decided by its scheduled flush."""
        self._running = False

    async def submit(self, job: Job) -> Decision:
        if not self._running:
            raise StoreError("the store writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._pending.append(_Pending(job, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        self._scheduled = bool(self._pending)
        if self._scheduled:
            loop.call_soon(self._flush, loop)
        try:
            outcomes = self.store.decide_batch([p.job for p in batch])
        except Exception as exc:  # the store must never leave a request unanswered
            log.exception("store batch failed")
            outcomes = [StoreError(str(exc)) for _ in batch]
        for p, outcome in zip(batch, outcomes, strict=True):
            if p.future.done():
                continue
            if isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)
