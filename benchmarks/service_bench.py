"""Where a /validate request's time goes, without HTTP: `AdmissionService.validate` in-process.

The same mix and bodies the HTTP benchmark sends (`payloads.mix_bodies`), decoded as the
HTTP adapter does, against the real SQLite store in a temp dir and the shipped bundle,
with the server's JSON logging at INFO to a file. Time per request, by request kind,
for each store `synchronous` setting asked for. Splits the HTTP gap into core, store and
logging: the core alone is `benchmarks.core`, the HTTP floor is the null webhook.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks import payloads
from gateway.logs import JsonFormatter
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, default_policy_dir
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore


@contextlib.contextmanager
def _server_logging(path: Path, level: str) -> Iterator[None]:
    """Log as `gateway.logs.setup_logging` does, to a file, restoring the root logger after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    casbin_logger = logging.getLogger("casbin")
    saved_casbin = casbin_logger.level
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    casbin_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        casbin_logger.setLevel(saved_casbin)
        handler.close()


def service_times(workdir: Path, *, synchronous: str = "FULL", count: int = 3000,
                  log_level: str = "INFO") -> dict[str, Any]:
    """Run the first `count` requests of the mix through a fresh service; time each."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"svc{synchronous.lower()}"
    raws = payloads.mix_bodies(count, tag)
    kinds = [payloads.mix_request(i, tag)[0] for i in range(count)]
    store = SQLiteStore(workdir / f"service-{synchronous}.db", synchronous=synchronous)
    service = AdmissionService(PolicyHolder(default_policy_dir()), store, metrics=Metrics())
    times: list[float] = []
    with _server_logging(workdir / f"service-{synchronous}.log", log_level):
        for raw in raws:
            started = time.perf_counter()
            service.validate(orjson.loads(raw))
            times.append(time.perf_counter() - started)
    store.close()
    by_kind: dict[str, list[float]] = {}
    for kind, t in zip(kinds, times, strict=True):
        by_kind.setdefault(kind, []).append(t)
    ordered = sorted(times)
    return {
        "synchronous": synchronous,
        "requests": count,
        "per_s": count / sum(times),
        "mean_us": statistics.fmean(times) * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
        "max_us": ordered[-1] * 1e6,
        "by_kind_mean_us": {k: round(statistics.fmean(v) * 1e6, 1) for k, v in sorted(by_kind.items())},
    }


def fsync_latency(directory: Path, *, count: int = 200) -> dict[str, float]:
    """Milliseconds per 4 KiB write + fsync in `directory`: what a durable commit waits for."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99)], "count": count}
