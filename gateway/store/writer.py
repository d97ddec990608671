"""One writer thread in front of the store, with group commit.

The event loop never waits on a disk sync: a request that needs the ledger is queued, the
writer decides everything queued so far in one transaction (one sync for the batch), and
each request's future is resolved after the commit, so no answer goes out before its audit
record is durable.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from gateway.core.decision import Decision
from gateway.errors import StoreError
from gateway.store.base import Job, Store

log = logging.getLogger("gateway.store")

_STOP = object()


@dataclass(slots=True)
class _Pending:
    job: Job
    future: asyncio.Future[Decision]
    loop: asyncio.AbstractEventLoop


class StoreWriter:
    def __init__(self, store: Store, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-gateway-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def submit(self, job: Job) -> Decision:
        if self._thread is None:
            raise StoreError("the store writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._queue.put(_Pending(job, future, loop))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            pending = [p for p in batch if isinstance(p, _Pending)]
            try:
                outcomes = self.store.decide_batch([p.job for p in pending])
            except Exception as exc:  # the store must never kill the writer
                log.exception("store batch failed")
                outcomes = [StoreError(str(exc)) for _ in pending]
            for p, outcome in zip(pending, outcomes, strict=True):
                p.loop.call_soon_threadsafe(_resolve, p.future, outcome)


def _resolve(future: asyncio.Future[Decision], outcome: Decision | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
