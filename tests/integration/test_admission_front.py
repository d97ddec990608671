"""`POST /validate` and `POST /mutate` are answered ahead of Starlette's routing (gateway.webhook.app).

Two real uvicorn servers on loopback, each with its own service and SQLite store: the app as
`create_app` builds it, and the same app with every request routed by Starlette (its 405s, 404s,
redirects and 500s are the reference). Raw HTTP over a socket, so chunked bodies, declared lengths
and a client that hangs up mid-body are exactly what the server sees. The JSON answers' bytes and
headers are spelled out as Starlette's JSONResponse sent them before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from conftest import INTERN, POLICIES, RESEARCHER, make_job, make_pytorchjob, review
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore
from gateway.webhook.app import create_app

LIMIT = 16 * 1024
"""max_body_bytes of both servers."""


class StarletteOnly:
    """The app as Starlette alone answers it, every request through its middleware and router."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(self.app, scope, receive, send)


@dataclass
class Gateway:
    service: AdmissionService
    app: Starlette
    port: int

    def count(self, name: str, **labels: str) -> float:
        return self.service.metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    """In order, lower-case names, without `date`."""
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[int]:
    """`app` on a real uvicorn server on loopback (lifespan on), in a thread; yields its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    """(the app as built, the same app through Starlette alone), each with a fresh store."""
    with contextlib.ExitStack() as stack:
        pair = []
        for name, wrap in (("front", lambda app: app), ("starlette", StarletteOnly)):
            policy_dir = tmp_path / name / "policies"
            shutil.copytree(POLICIES, policy_dir)
            store = SQLiteStore(tmp_path / name / "state.db")
            stack.callback(store.close)
            service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics())
            app = create_app(service, max_body_bytes=LIMIT)
            pair.append(Gateway(service, app, stack.enter_context(serve(wrap(app)))))
        yield pair[0], pair[1]


def request(method: str, path: str, body: bytes | None = None, *, content_type: str | None = "application/json",
            headers: tuple[str, ...] = ()) -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close after answering."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close", *headers]
    if content_type is not None:
        lines.append(f"content-type: {content_type}")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def exchange(port: int, data: bytes) -> Answer:
    """Send `data`, read until the server closes, parse the one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [(k.lower(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)]
    return Answer(int(status_line.split()[1]), [(k, v) for k, v in headers if k != "date"], body)


def both(gateways: tuple[Gateway, Gateway], data: bytes) -> Answer:
    """The front's answer to `data`, after checking that Starlette alone answers it the same."""
    front, starlette = gateways
    mine, theirs = exchange(front.port, data), exchange(starlette.port, data)
    assert mine == theirs
    return mine


def json_headers(body: bytes) -> list[tuple[str, str]]:
    """The headers of a JSON answer, as Starlette's JSONResponse sent them before the front."""
    return [("server", "uvicorn"), ("content-length", str(len(body))), ("content-type", "application/json"),
            ("connection", "close")]


def launch(gpus: int = 8) -> bytes:
    return orjson.dumps(review(make_job(gpus=gpus).obj(), user="bob", groups=RESEARCHER).body())


def test_admission_reviews_are_answered_as_starlette_answered_them(gateways: tuple[Gateway, Gateway]) -> None:
    ok = both(gateways, request("POST", "/validate", launch()))
    assert ok.status == 200 and orjson.loads(ok.body)["response"]["allowed"]
    assert ok.headers == json_headers(ok.body)
    denied = both(gateways, request("POST", "/validate", orjson.dumps(
        review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())))
    assert orjson.loads(denied.body)["response"]["status"]["code"] == 403
    mutated = both(gateways, request("POST", "/mutate", launch()))
    assert orjson.loads(mutated.body)["response"]["patchType"] == "JSONPatch"
    untyped = both(gateways, request("POST", "/validate", launch(), content_type=None))
    assert untyped.status == 200
    for front_or_starlette in gateways:
        assert front_or_starlette.count("gpu_gateway_request_seconds_count", endpoint="validate") == 3
        assert front_or_starlette.count("gpu_gateway_request_seconds_count", endpoint="mutate") == 1


def test_refusals_have_the_same_status_body_and_counters(gateways: tuple[Gateway, Gateway]) -> None:
    wrong_type = both(gateways, request("POST", "/validate", launch(), content_type="text/plain"))
    assert wrong_type.status == 415 and wrong_type.body == b'{"error":"send application/json"}'
    assert wrong_type.headers == json_headers(wrong_type.body)
    not_json = both(gateways, request("POST", "/mutate", b"{not json"))
    assert not_json.status == 400 and orjson.loads(not_json.body)["error"].startswith("body is not JSON: ")
    not_a_review = both(gateways, request("POST", "/validate", b"[1, 2, 3]"))
    assert not_a_review.status == 400
    assert orjson.loads(not_a_review.body)["error"].startswith("not a readable AdmissionReview: ")
    too_large = b'{"pad": "' + b"x" * LIMIT + b'"}'
    refused = both(gateways, request("POST", "/validate", too_large))
    assert refused.status == 413
    assert refused.body == b'{"error":"AdmissionReview larger than %d bytes refused"}' % LIMIT
    declared = request("POST", "/validate", headers=(f"content-length: {LIMIT + 1}",))  # and no body sent
    assert both(gateways, declared) == refused
    for front_or_starlette in gateways:
        assert front_or_starlette.count("gpu_gateway_errors_total", kind="too_large") == 2
        assert front_or_starlette.count("gpu_gateway_errors_total", kind="unreadable") == 2  # not JSON, not a review
        assert front_or_starlette.count("gpu_gateway_request_seconds_count", endpoint="validate") == 4


def test_a_chunked_body_is_read_to_the_bound_and_refused_past_it(gateways: tuple[Gateway, Gateway]) -> None:
    def chunked(*chunks: bytes, last: bool = True) -> bytes:
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + (b"0\r\n\r\n" if last else b"")
        return request("POST", "/validate", headers=("transfer-encoding: chunked",)) + body

    whole = launch()
    accepted = both(gateways, chunked(whole[:100], whole[100:300], whole[300:]))
    assert accepted.status == 200 and orjson.loads(accepted.body)["response"]["allowed"]
    # Past the bound the answer comes at once, without the rest of the body (here never sent).
    over = both(gateways, chunked(b"[" + b" " * (LIMIT // 2), b" " * (LIMIT // 2), last=False))
    assert over.status == 413
    for front_or_starlette in gateways:
        assert front_or_starlette.count("gpu_gateway_errors_total", kind="too_large") == 1


def test_other_methods_and_paths_get_starlettes_answers(gateways: tuple[Gateway, Gateway]) -> None:
    for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
        answer = both(gateways, request(method, "/validate", content_type=None))
        assert answer.status == 405 and answer.header("allow") == "POST"
        assert answer.body == (b"" if method == "HEAD" else b"Method Not Allowed")
    assert both(gateways, request("GET", "/mutate", content_type=None)).status == 405
    assert both(gateways, request("POST", "/nowhere", launch())).status == 404
    assert both(gateways, request("GET", "/nowhere", content_type=None)).body == b"Not Found"
    assert both(gateways, request("POST", "/validate/", launch())).status == 307  # Starlette's slash redirect
    assert both(gateways, request("POST", "/validate?timeout=10s", launch())).status == 200
    assert both(gateways, request("GET", "/healthz", content_type=None)).body == b"ok"
    for front_or_starlette in gateways:
        assert front_or_starlette.count("gpu_gateway_request_seconds_count", endpoint="validate") == 1


def test_a_crash_in_the_decision_is_a_500_like_starlettes(gateways: tuple[Gateway, Gateway],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    for gateway in gateways:
        async def broken(*_: Any, **__: Any) -> dict[str, Any]:
            raise RuntimeError("bug")
        gateway.service.validate_async = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        answer = both(gateways, request("POST", "/validate", launch()))
    assert answer.status == 500 and answer.body == b"Internal Server Error"
    assert answer.header("content-type") == "text/plain; charset=utf-8"
    crashes = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(crashes) == 2  # the server logs the crash, from either


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_a_client_that_hangs_up_mid_body_gets_nothing_and_the_server_goes_on(
        gateways: tuple[Gateway, Gateway], caplog: pytest.LogCaptureFixture) -> None:
    whole = launch()
    for gateway in gateways:
        with caplog.at_level(logging.WARNING), socket.create_connection(("127.0.0.1", gateway.port)) as s:
            s.sendall(request("POST", "/validate", whole)[:-100])  # the headers promise 100 bytes more
        # The server saw the hang-up: the request is timed, nothing is counted as an error or logged.
        _wait_for(lambda g=gateway: g.count("gpu_gateway_request_seconds_count", endpoint="validate") == 1)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert gateway.count("gpu_gateway_errors_total", kind="too_large") == 0
        assert gateway.count("gpu_gateway_errors_total", kind="unreadable") == 0
        assert list(gateway.service.store.audit_rows()) == []
    after = both(gateways, request("POST", "/validate", whole))
    assert after.status == 200 and orjson.loads(after.body)["response"]["allowed"]


def test_an_http_disconnect_before_the_body_is_answered_with_nothing(service: AdmissionService) -> None:
    app = create_app(service)
    sent: list[Message] = []
    scope: Scope = {"type": "http", "method": "POST", "path": "/validate", "root_path": "",
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"40")]}

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent == []
    assert service.metrics.registry.get_sample_value("gpu_gateway_request_seconds_count",
                                                     {"endpoint": "validate"}) == 1


def test_middleware_added_to_the_app_sees_the_admission_requests(tmp_path: Path, service: AdmissionService) -> None:
    seen: list[str] = []

    class Recorder:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.app(scope, receive, send)

    app = create_app(service)
    app.add_middleware(Recorder)
    with serve(app) as port:
        assert exchange(port, request("POST", "/validate", launch())).status == 200
    assert seen == ["POST /validate"]
