"""The HTTP floor: a webhook that parses the AdmissionReview and answers allowed.

Same stack and settings as the gateway's server (Starlette + uvicorn with uvloop and
httptools, orjson, 1 worker, no access log), so the difference between the two is the
gateway's own work. Run as ``python3 -m benchmarks.null_webhook --port 18081``.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def validate(request: Request) -> Response:
    body = orjson.loads(await request.body())
    uid = body["request"]["uid"]
    return _Json({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "response": {"uid": uid, "allowed": True}})


async def healthz(_: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[
    Route("/validate", validate, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    ssl = {"ssl_certfile": args.cert, "ssl_keyfile": args.key} if args.cert else {}
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                log_level="warning", timeout_graceful_shutdown=10, **ssl)


if __name__ == "__main__":
    main()
