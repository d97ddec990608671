"""SIGTERM in two steps: fail readiness first, then drain.

On the first SIGTERM (or SIGINT) the service is marked draining, so /readyz answers 503 and
the endpoints controller takes this replica out of the Service, while requests still arriving
are served for `delay_s`. Then uvicorn's graceful shutdown begins: the listener closes, the
requests in flight are answered, and the store writer finishes the batch under way. A second
signal skips the rest of the delay.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("gateway")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Any, delay_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.delay_s = delay_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.service.draining
        self.service.draining = True
        if first and self.delay_s > 0:
            log.info("signal %d: not ready; draining in %.1f s", sig, self.delay_s)
            self._timer = threading.Timer(self.delay_s, super().handle_exit, (sig, frame))
            self._timer.daemon = True
            self._timer.start()
            return
        if self._timer is not None:
            self._timer.cancel()
        super().handle_exit(sig, frame)
