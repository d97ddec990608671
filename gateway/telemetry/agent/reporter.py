"""Reporting to the gateway: a bounded on-disk spool and a sender thread that never blocks sampling.

Every report (one tick of one node) is first written to the spool directory (write, fsync,
rename), so a gateway outage or an agent restart loses nothing. The sender thread posts the
oldest reports, up to `batch_reports` per request, to `POST /api/v1/telemetry` and deletes
them once the gateway answers 200. The gateway skips samples it already holds, so a report
sent twice (an answer lost on the way back) is harmless.

While the gateway is unreachable or refuses (5xx, 401, 403, 429) the sender backs off
exponentially with jitter, up to `retry_max_s`. The spool is bounded by count and by bytes:
beyond either, the oldest reports are dropped and counted (`dropped_samples`). A report the
gateway says it cannot read (400) is set aside in `rejected/` so it cannot block the rest.
The bearer token is read from its file and re-read whenever the file changes (projected
service-account tokens are rotated by the kubelet).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

log = logging.getLogger("gateway.agent")


class TokenFile:
    """A bearer token in a file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The token, or raises OSError / ValueError naming the problem."""
        st = self.path.stat()
        key = (st.st_mtime_ns, st.st_size)
        if key != self._seen:
            token = self.path.read_text().strip()
            if not token:
                raise ValueError(f"token file {self.path} is empty")
            self._token, self._seen = token, key
        return self._token


@dataclass
class SpoolStats:
    reports: int = 0
    bytes: int = 0
    dropped_samples: int = 0


class Spool:
    """Reports on disk, oldest first, bounded by count and bytes. Thread-safe."""

    def __init__(self, directory: Path, *, max_reports: int = 8640, max_bytes: int = 192 * 2**20) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_reports, self.max_bytes = max_reports, max_bytes
        self._lock = threading.Lock()
        names = sorted(p for p in self.dir.glob("*.json"))
        for stale in self.dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        self._files: list[tuple[Path, int, int]] = []  # (path, bytes, samples)
        for p in names:
            try:
                data = orjson.loads(p.read_bytes())
                self._files.append((p, p.stat().st_size, len(data.get("samples", []))))
            except (OSError, ValueError):
                log.warning("spool: unreadable report %s set aside", p)
                self._set_aside(p)
        last = int(names[-1].stem) if names and names[-1].stem.isdigit() else 0
        self._seq = itertools.count(last + 1)
        self.dropped_samples = 0

    def _set_aside(self, path: Path) -> None:
        rejected = self.dir / "rejected"
        rejected.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            path.replace(rejected / path.name)
        kept = sorted(rejected.glob("*.json"))
        for old in kept[:-20]:  # keep the last few for a person to look at
            old.unlink(missing_ok=True)

    def put(self, report: dict[str, Any]) -> None:
        """Add a report (durably), dropping the oldest beyond the bounds. Raises OSError (disk full...)."""
        data = orjson.dumps(report)
        with self._lock:
            path = self.dir / f"{next(self._seq):016d}.json"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
            self._files.append((path, len(data), len(report.get("samples", []))))
            while len(self._files) > self.max_reports or (
                    len(self._files) > 1 and sum(b for _, b, _ in self._files) > self.max_bytes):
                old, _, samples = self._files.pop(0)
                old.unlink(missing_ok=True)
                self.dropped_samples += samples
                log.error("spool full (%d reports, %d bytes at most): dropped the oldest report (%d samples)",
                          self.max_reports, self.max_bytes, samples)

    def oldest(self, n: int) -> list[tuple[Path, dict[str, Any]]]:
        with self._lock:
            files = list(self._files[:n])
        out = []
        for path, _, _ in files:
            try:
                out.append((path, orjson.loads(path.read_bytes())))
            except (OSError, ValueError):
                self.remove([path], set_aside=True)
        return out

    def remove(self, paths: list[Path], *, set_aside: bool = False) -> None:
        with self._lock:
            gone = set(paths)
            self._files = [f for f in self._files if f[0] not in gone]
        for p in paths:
            if set_aside:
                self._set_aside(p)
            else:
                p.unlink(missing_ok=True)

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(len(self._files), sum(b for _, b, _ in self._files), self.dropped_samples)


class Reporter:
    """The sender thread: spool → POST /api/v1/telemetry, with backoff (see the module docstring)."""

    def __init__(self, gateway: str, token: TokenFile, spool: Spool, *, verify: Any = True,
                 batch_reports: int = 32, retry_min_s: float = 1.0, retry_max_s: float = 60.0,
                 timeout_s: float = 10.0, metrics: Any = None) -> None:
        self.url = gateway.rstrip("/") + "/api/v1/telemetry"
        self.token, self.spool, self.metrics = token, spool, metrics
        self.batch_reports = batch_reports
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._client = httpx.Client(verify=verify, timeout=timeout_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-gateway-agent-reporter", daemon=True)
        self._delay = 0.0
        self._one_at_a_time = 0
        """Reports left to send singly after the gateway refused a batch (to find the bad one)."""
        self.sent_samples = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, report: dict[str, Any]) -> None:
        """Spool a report and wake the sender. Never raises: a spool failure is logged and counted."""
        try:
            self.spool.put(report)
        except OSError as exc:
            self.spool.dropped_samples += len(report.get("samples", []))
            log.error("cannot spool a report (%d samples lost): %s", len(report.get("samples", [])), exc)
        self._wake.set()

    def stop(self, *, drain_s: float = 5.0) -> None:
        """Stop the sender, after trying for up to `drain_s` to send what is spooled."""
        deadline = time.monotonic() + drain_s
        while self.spool.stats().reports and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._delay or 5.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            while not self._stop.is_set():
                try:
                    outcome = self.send_once()
                except Exception:  # the sender must never die: log, back off, retry
                    log.exception("reporting failed unexpectedly")
                    outcome = False
                if outcome is None:  # spool empty
                    self._delay = 0.0
                    break
                if not outcome:
                    self.failures += 1
                    self._delay = min(self.retry_max_s, max(self.retry_min_s, self._delay * 2))
                    if self.metrics is not None:
                        self.metrics.report_failures.inc()
                    if self._stop.wait(self._delay * random.uniform(0.8, 1.2)):
                        return
                else:
                    self._delay = 0.0

    def send_once(self) -> bool | None:
        """Send the oldest spooled reports: True sent, False failed (back off), None nothing to send."""
        batch = self.spool.oldest(1 if self._one_at_a_time else self.batch_reports)
        self._one_at_a_time = max(0, self._one_at_a_time - 1)
        if not batch:
            return None
        try:
            token = self.token.token()
        except (OSError, ValueError) as exc:
            log.error("cannot read the bearer token: %s", exc)
            return False
        body = orjson.dumps([report for _, report in batch])
        try:
            response = self._client.post(self.url, content=body, headers={
                "authorization": f"Bearer {token}", "content-type": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("gateway unreachable (%d reports spooled): %s", self.spool.stats().reports, exc)
            return False
        if response.status_code == 200:
            self.spool.remove([p for p, _ in batch])
            sent = sum(len(r.get("samples", [])) for _, r in batch)
            self.sent_samples += sent
            if self.metrics is not None:
                self.metrics.reported_samples.inc(sent)
            return True
        reason = response.text[:300]
        if response.status_code in (400, 413):
            if len(batch) > 1:  # find the one report the gateway cannot read: send one at a time
                self._one_at_a_time = len(batch)
                return True
            log.error("gateway refused report %s (%d): %s; set aside", batch[0][0].name, response.status_code, reason)
            self.spool.remove([batch[0][0]], set_aside=True)
            self.spool.dropped_samples += len(batch[0][1].get("samples", []))
            return True
        log.warning("gateway answered %d: %s", response.status_code, reason)
        return False
