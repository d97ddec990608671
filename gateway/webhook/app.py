"""The HTTP adapter: an ASGI app serving /mutate, /validate, /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import ReviewError
from gateway.service import AdmissionService
from gateway.store.writer import StoreWriter

log = logging.getLogger("gateway.http")


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


class _TooLarge(Exception):
    pass


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    service: AdmissionService,
    *,
    max_body_bytes: int = 8 * 1024 * 1024,
    reload_interval_s: float | None = None,
    api: Sequence[BaseRoute] | None = None,
    decision_budget_s: float | None = None,
    offload_store: bool = False,
) -> Starlette:
    """Build the app. With `reload_interval_s`, the policy bundle is re-checked in the background.

    `api` (gateway.api.api_routes) is mounted beside the admission endpoints.

    Ledger writes are group-committed (one disk sync per batch of requests): on the event loop,
    or with `offload_store` (PostgreSQL) on a writer thread, every other store read then also
    kept off the loop. With `decision_budget_s`, each /validate is answered within it
    (docs/faults.md).
    """
    budget = decision_budget_s
    writer = StoreWriter(service.store, offload=offload_store,
                         commit_grace_s=budget / 4 if budget else 0.5)

    async def validate(body: Any) -> dict[str, Any]:
        deadline = writer.clock() + budget if budget else None
        return await service.validate_async(body, writer, deadline=deadline)

    async def mutate(body: Any) -> dict[str, Any]:
        return service.mutate(body)

    routes: list[BaseRoute] = [
        Route("/mutate", _review_endpoint(service, "mutate", mutate, max_body_bytes), methods=["POST"]),
        Route("/validate", _review_endpoint(service, "validate", validate, max_body_bytes), methods=["POST"]),
        *_probe_routes(service, offload_store=offload_store, budget_s=budget),
        *(api or ()),
    ]
    lifespan = _lifespan(service, writer, reload_interval_s=reload_interval_s, offload_store=offload_store)
    return Starlette(routes=routes, lifespan=lifespan)


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


def _review_endpoint(service: AdmissionService, name: str, handler: Handler, max_body_bytes: int,
                     ) -> Callable[[Request], Awaitable[Response]]:
    """POST of an AdmissionReview: JSON only, bounded, decoded once, timed by `name`."""
    latency = service.metrics.latency.labels(name)

    async def review(request: Request) -> Response:
        started = time.perf_counter()
        try:
            if "json" not in request.headers.get("content-type", "application/json"):
                return _error(415, "send application/json")
            try:
                raw = await _read_body(request, max_body_bytes)
            except _TooLarge:
                service.metrics.errors.labels("too_large").inc()
                return _error(413, f"AdmissionReview larger than {max_body_bytes} bytes refused")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                service.metrics.errors.labels("unreadable").inc()
                return _error(400, f"body is not JSON: {exc}")
            try:
                return _Json(await handler(body))
            except ReviewError as exc:
                return _error(400, f"not a readable AdmissionReview: {exc}")
        finally:
            latency.observe(time.perf_counter() - started)

    return review


def _probe_routes(service: AdmissionService, *, offload_store: bool, budget_s: float | None) -> list[BaseRoute]:
    """/healthz (the process answers), /readyz (it can decide: bundle and store), /metrics."""
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        if service.draining:
            return PlainTextResponse("shutting down", status_code=503)
        if not offload_store:
            ok, detail = service.ready()
        else:  # a stalled database must not stall the probe
            try:
                ok, detail = await asyncio.wait_for(asyncio.to_thread(service.ready), budget_s or 2.0)
            except TimeoutError:
                ok, detail = False, "store unavailable: no answer in time"
        return PlainTextResponse(detail, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        service.metrics.policy_loaded.set(0 if service.policies.last_error else 1)
        registry = service.metrics.registry
        body = await asyncio.to_thread(generate_latest, registry) if offload_store else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]


def _lifespan(service: AdmissionService, writer: StoreWriter, *, reload_interval_s: float | None,
              offload_store: bool) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Start the store writer and the background tasks (policy reload; with `offload_store`,
    the settings and grants refresh); on shutdown the batch under way commits or rolls back whole."""
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        tasks = []
        writer.start()
        if reload_interval_s:
            tasks.append(asyncio.create_task(_watch_policy(service, reload_interval_s)))
        if offload_store:
            service.refresh_inline = False
            with contextlib.suppress(TimeoutError):  # grants and settings in force before the first request
                await asyncio.wait_for(asyncio.to_thread(service.refresh), 5)
            tasks.append(asyncio.create_task(_refresh(service)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(writer.close)

    return lifespan


async def _watch_policy(service: AdmissionService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        result = service.policies.reload()
        if result.error:
            service.reload_failed(result.error)


async def _refresh(service: AdmissionService) -> None:
    """Keep the run-time settings and grants fresh from a thread (one read at a time)."""
    while True:
        try:
            await asyncio.to_thread(service.refresh)
        except Exception:
            log.exception("background refresh failed")
        await asyncio.sleep(min(service.GRANTS_TTL_S, service.runtime.TTL_S) / 2)
