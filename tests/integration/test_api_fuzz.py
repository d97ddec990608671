"""schemathesis against the OpenAPI document a real gateway publishes: every operation it lists,
called by an administrator and by an intern with generated parameters and bodies, answers
without a 5xx, with a status the document lists, and with a body that matches its schema.

Bounded: `GPU_GATEWAY_FUZZ_EXAMPLES` examples per operation and caller (default 12), derandomized
so a failure reproduces. The document's own completeness is checked against the routes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import INTERN, POLICIES, RESEARCHER, make_job, make_pytorchjob, review
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode
from served import API_SECRET, Served, api_token, bearer, start_server, stop_server
from starlette.routing import Mount, Route

from gateway.api.context import ApiContext
from gateway.api.routes import PREFIX, api_routes
from gateway.policy_bundle import load_bundle

EXAMPLES = int(os.environ.get("GPU_GATEWAY_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
CALLERS = {"admin": ("root", ["gpu-admins"]), "intern": ("alice", list(INTERN))}
#: Path parameter values that name something that exists (the fixture adds the ids), tried
#: besides generated ones, so that operations on one object get past "not found".
KNOWN: dict[str, list[str]] = {"subject": ["group:gpu-interns", "user:ivan"], "target": ["team:vision", "role:intern"],
                               "kind": ["Job"], "namespace": ["research"], "name": ["b1"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway with a few records, on its own copy of the policy (a fuzzed policy change stays there)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    policies = tmp / "policies"
    shutil.copytree(POLICIES, policies)
    (tmp / "jwt.secret").write_text(API_SECRET)
    served = start_server(tmp, "--jwt-secret-file", str(tmp / "jwt.secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", tls=False, policy_dir=policies)
    with served.client() as c:
        c.post("/validate", json=review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())
        c.post("/validate", json=review(make_job(gpus=8).named("research", "b1").obj(), user="bob",
                                        groups=RESEARCHER).body())
        approval = c.post(f"{PREFIX}/approvals", headers=bearer("alice", list(INTERN)), json={
            "action": "launch", "kind": "Job", "namespace": "research", "name": "big", "gpus": 64,
            "reason": "deadline"}).json()
        grant = c.post(f"{PREFIX}/grants", headers=bearer("root", ["gpu-admins"]), json={
            "user": "ivan", "role": "lead", "reason": "on-call", "expires_in_s": 3600}).json()
    KNOWN["id"] = [approval["id"], grant["id"]]
    yield served
    stop_server(served)


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item
            if method in ("get", "put", "post", "delete", "patch")}


def test_the_document_describes_every_route_and_only_those(server: Served) -> None:
    document = httpx.get(f"{server.url}{PREFIX}/openapi.json", timeout=10).json()
    [mount] = api_routes(ApiContext(None, lambda: load_bundle(POLICIES)))
    assert isinstance(mount, Mount)
    routes = {(method, route.path) for route in mount.routes if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}
    assert document_operations(document) == routes
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (method, path)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (method, path)
            if operation.get("security", document["security"]):
                assert {"401", "503"} <= set(operation["responses"]), (method, path)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], (method, path)


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_no_server_errors_and_answers_as_documented(server: Served, caller: str) -> None:
    document = httpx.get(f"{server.url}{PREFIX}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    user, groups = CALLERS[caller]
    headers = {"authorization": f"Bearer {api_token(user, groups, exp=2**31 - 1)}"}
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        names = [p.name for p in operation.path_parameters]
        fixed: list[dict[str, Any] | None] = [None]
        if names and all(n in KNOWN for n in names):
            fixed += [dict(zip(names, values, strict=True)) for values in zip(*(KNOWN[n] for n in names), strict=False)]
        for path_parameters in fixed:

            @settings(max_examples=EXAMPLES if path_parameters is None else max(EXAMPLES // 3, 2), derandomize=True,
                      database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(path_parameters=path_parameters))
            def call(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=f"{server.url}{PREFIX}", headers=headers, timeout=10)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                call()
            except BaseException as exc:  # schemathesis raises groups; report every failing operation together
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{operation.label} {path_parameters or ''}: {type(exc).__name__}: {str(exc)[:2000]}")
    assert calls >= len(document_operations(document))
    assert not failures, "\n\n".join(failures)


def test_invalid_input_is_refused_without_server_errors(server: Served) -> None:
    """Negative examples (wrong types, missing fields, out-of-range values, mangled tokens): 4xx only."""
    document = httpx.get(f"{server.url}{PREFIX}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"authorization": f"Bearer {api_token('root', ['gpu-admins'], exp=2**31 - 1)}"}
    failures: list[str] = []
    statuses: set[int] = set()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=max(EXAMPLES // 2, 3), derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        def call(case: Any) -> None:
            response = case.call(base_url=f"{server.url}{PREFIX}", headers=headers, timeout=10)
            statuses.add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error], headers=headers)

        try:
            call()
        except Unsatisfiable:
            pass  # nothing to make invalid (no parameters, no body)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    assert {400, 401} <= statuses and max(statuses) < 500


def test_bodies_no_store_can_hold_are_refused(server: Served) -> None:
    """A lone surrogate (valid JSON, not valid UTF-8) in any body the document describes is a 400."""
    document = httpx.get(f"{server.url}{PREFIX}/openapi.json", timeout=10).json()
    headers = {**bearer("root", ["gpu-admins"]), "content-type": "application/json"}
    sent = 0
    with server.client() as c:
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                    continue
                url = PREFIX + path.replace("{", "").replace("}", "")
                for body in (b'{"name": "x\\ud800", "user": "\\udc00", "reason": "\\ud800"}', b'["\\ud800"]'):
                    r = c.request(method.upper(), url, content=body, headers=headers)
                    sent += 1
                    assert r.status_code in (400, 403, 404), (method, path, r.status_code, r.text)
                    assert set(r.json()) >= {"error", "reason"}
    assert sent >= 10
