"""The HTTP adapter: an ASGI app serving /mutate, /validate, /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.errors import ReviewError
from gateway.service import AdmissionService
from gateway.store.writer import StoreWriter

log = logging.getLogger("gateway.http")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body from ASGI `receive`, refused past `limit` bytes."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the usual case: the whole body in one message
    chunks, size = [body], len(body)
    while size <= limit and message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
    if size > limit:
        raise _TooLarge()
    return b"".join(chunks)


_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = _JSON) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


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

    reviews = {"/mutate": _Review(service, "mutate", mutate, max_body_bytes),
               "/validate": _Review(service, "validate", validate, max_body_bytes)}
    routes: list[BaseRoute] = [
        *(Route(path, review, methods=["POST"]) for path, review in reviews.items()),
        *_probe_routes(service, offload_store=offload_store, budget_s=budget),
        *(api or ()),
    ]
    lifespan = _lifespan(service, writer, reload_interval_s=reload_interval_s, offload_store=offload_store)
    return _AdmissionApp(reviews, routes=routes, lifespan=lifespan)


class _AdmissionApp(Starlette):
    """Starlette with `POST /validate` and `POST /mutate` answered ahead of its middleware and routing.

    These two endpoints carry all of the API server's traffic, and Starlette's middleware, routing
    and Request/Response objects cost them about 15 us of CPU each (README, Performance). Every
    other request, the lifespan, and these paths under a root path or behind added middleware go
    through Starlette, so their answers (405 for `GET /validate`, 404, redirects) are its own.
    """

    def __init__(self, reviews: dict[str, _Review], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reviews = reviews

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
                and not self.user_middleware):
            review = self._reviews.get(scope["path"])
            if review is not None:
                try:
                    answer = await review.answer(scope, receive)
                except Exception:  # what Starlette's ServerErrorMiddleware answers; the server logs it
                    await _respond(send, 500, b"Internal Server Error", _TEXT)
                    raise
                if answer is not None:
                    await _respond(send, *answer)
                return
        await super().__call__(scope, receive, send)


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


class _Review:
    """POST of an AdmissionReview, as an ASGI app: JSON only, bounded, decoded once, timed by `name`."""

    def __init__(self, service: AdmissionService, name: str, handler: Handler, max_body_bytes: int) -> None:
        self._metrics = service.metrics
        self._latency = service.metrics.latency.labels(name)
        self._handler = handler
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.answer(scope, receive)
        if answer is not None:
            await _respond(send, *answer)

    async def answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes] | None:
        """Status and JSON body; None when the client went away before its body was read."""
        started = time.perf_counter()
        try:
            return await self._answer(scope, receive)
        finally:
            self._latency.observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes] | None:
        content_type, declared = _content_headers(scope["headers"])
        if content_type is not None and b"json" not in content_type:
            return 415, _error("send application/json")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self._limit:
                raise _TooLarge()
            raw = await _read_body(receive, self._limit)
        except _TooLarge:
            self._metrics.errors.labels("too_large").inc()
            return 413, _error(f"AdmissionReview larger than {self._limit} bytes refused")
        except _Disconnected:
            log.debug("client disconnected before sending its whole AdmissionReview")
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._metrics.errors.labels("unreadable").inc()
            return 400, _error(f"body is not JSON: {exc}")
        try:
            return 200, orjson.dumps(await self._handler(body))
        except ReviewError as exc:
            return 400, _error(f"not a readable AdmissionReview: {exc}")


def _content_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The first content-type and content-length of a request's (lower-case) headers."""
    content_type = length = None
    for name, value in headers:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and length is None:
            length = value
    return content_type, length


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
