"""The goals every fuzz case is checked against, through the real app in-process.

- no HTTP 5xx, and no exception escaping the app;
- every 200 is an AdmissionReview response in the request's apiVersion (v1 where that is not
  one gpu-gateway reads) whose uid is the request's, whenever the request's uid is readable (a
  JSON object with a non-empty string `request.uid`); such a body always gets a 200 answer,
  never a bare 4xx;
- `/validate` never allows what the gateway could not read: a review its own parser refuses,
  an object it cannot reduce to GPUs (unreadable-object), or a case built with a broken GPU
  quantity;
- a `/mutate` patch is base64 of a JSONPatch that applies to the object.
"""

from __future__ import annotations

import base64
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
from starlette.testclient import TestClient  # needs httpx, a dependency already

from fuzz.cases import Case
from gateway.admission.admission import prepare
from gateway.admission.review import answer_version, parse_review, review_uid
from gateway.config import PolicySettings, ServerSettings, Settings, StoreSettings
from gateway.errors import GatewayError
from gateway.server import Gateway, build_gateway


class Target:
    """The real gateway app with a real SQLite store, driven in-process."""

    def __init__(self, gateway: Gateway, client: TestClient) -> None:
        self.gateway, self.client = gateway, client
        self.outcomes: Counter[str] = Counter()
        """How the cases were answered: `HTTP 400`, `/validate allowed`, `/mutate denied`, ..."""

    def post(self, case: Case) -> tuple[int, bytes]:
        headers = {} if case.content_type is None else {"content-type": case.content_type}
        response = self.client.post(case.endpoint, content=case.body, headers=headers)
        return response.status_code, response.content


@contextmanager
def target(directory: Path | None = None) -> Iterator[Target]:
    """A gateway on a fresh state file (in `directory`, else a temporary one), lifespan running."""
    logging.getLogger("gateway").setLevel(logging.CRITICAL)  # unreadable reviews are logged; not here
    with tempfile.TemporaryDirectory(prefix="gpu-gateway-fuzz-") as tmp:
        state = (directory or Path(tmp)) / "fuzz.db"
        settings = Settings(server=ServerSettings(host="127.0.0.1", insecure_http=True),
                            store=StoreSettings(path=state, synchronous="NORMAL"),
                            policy=PolicySettings(reload_interval_s=3600))
        gateway = build_gateway(settings)
        try:
            with TestClient(gateway.app, base_url="http://127.0.0.1", raise_server_exceptions=True) as client:
                yield Target(gateway, client)
        finally:
            gateway.service.store.close()


def _decoded(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _could_not_read(decoded: Any, gateway: Gateway) -> str:
    """Why the gateway itself cannot read this review (empty: it can)."""
    try:
        req = parse_review(decoded)
    except GatewayError as exc:
        return f"the parser refuses it: {exc}"
    try:
        plan = prepare(req, gateway.service.policies.policy)
    except Exception as exc:
        return f"prepare fails: {exc!r}"
    if plan.early is not None and plan.early.rule == "unreadable-object":
        return f"unreadable object: {plan.early.reason}"
    return ""


def check(t: Target, case: Case) -> str:
    """Run one case; the broken goal, in words (empty when every goal holds)."""
    try:
        status, content = t.post(case)
    except Exception as exc:  # raise_server_exceptions: an exception escaped the app
        return f"exception escaped the app: {exc!r}"
    t.outcomes[f"HTTP {status}"] += status != 200
    if status >= 500:
        return f"HTTP {status}: {content[:300]!r}"
    # The app reads a body as JSON when the content type says so, or when there is none.
    decoded = _decoded(case.body) if case.content_type is None or "json" in case.content_type else None
    uid = review_uid(decoded)
    if status != 200:
        if uid is not None and len(case.body) <= 8 * 1024 * 1024:
            return f"HTTP {status} for a review whose uid {uid!r:.60} is readable: {content[:200]!r}"
        return ""
    try:
        answer = orjson.loads(content)
        response = answer["response"]
        allowed = response["allowed"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return f"200 that is not an AdmissionReview response ({exc!r}): {content[:200]!r}"
    if answer.get("apiVersion") != answer_version(decoded) or answer.get("kind") != "AdmissionReview":
        return f"200 without the request's apiVersion or kind AdmissionReview: {content[:200]!r}"
    if uid is not None and response.get("uid") != uid:
        return f"uid not echoed: sent {uid!r:.60}, answered {response.get('uid')!r:.60}"
    if allowed is not True and allowed is not False:
        return f"allowed is {allowed!r}"
    t.outcomes[f"{case.endpoint} {'allowed' if allowed else 'denied'}"] += 1
    if case.endpoint == "/validate" and allowed:
        if case.must_deny:
            return f"allowed although built unreadable: {case.must_deny}"
        why = _could_not_read(decoded, t.gateway)
        if why:
            return f"allowed although the gateway could not read it ({why:.300})"
    if case.endpoint == "/mutate" and "patch" in response:
        try:
            ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
            obj = decoded["request"]["object"] if isinstance(decoded, dict) else None
            jsonpatch.apply_patch(obj, ops)
        except RecursionError:
            return ""  # deeper than jsonpatch can copy; the gateway itself answered
        except Exception as exc:
            return f"the mutate patch does not apply: {exc!r}"
    return ""
