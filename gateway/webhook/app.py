"""The HTTP adapter: an ASGI app serving /mutate, /validate, /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
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
) -> Starlette:
    """Build the app. With `reload_interval_s`, the policy bundle is re-checked in the background.

    `api` (gateway.api.api_routes) is mounted beside the admission endpoints.

    Ledger writes are group-committed on the event loop (one disk sync per batch of requests).
    """
    writer = StoreWriter(service.store)

    async def validate(body: Any) -> dict[str, Any]:
        return await service.validate_async(body, writer)

    async def mutate(body: Any) -> dict[str, Any]:
        return service.mutate(body)

    def endpoint(name: str, handler: Any) -> Any:
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
                    return _error(400, f"not an admission.k8s.io/v1 AdmissionReview: {exc}")
            finally:
                latency.observe(time.perf_counter() - started)

        return review

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ok, detail = service.ready()
        return PlainTextResponse(detail, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        service.metrics.policy_loaded.set(0 if service.policies.last_error else 1)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = None
        writer.start()
        if reload_interval_s:
            task = asyncio.create_task(_watch_policy(service, reload_interval_s))
        try:
            yield
        finally:
            if task:
                task.cancel()
            writer.stop()

    routes: list[BaseRoute] = [
        Route("/mutate", endpoint("mutate", mutate), methods=["POST"]),
        Route("/validate", endpoint("validate", validate), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(api or ()),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _watch_policy(service: AdmissionService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        result = service.policies.reload()
        if result.error:
            service.metrics.policy_reload_failures.inc()
