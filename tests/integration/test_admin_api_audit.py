"""/api/v1/audit and /api/v1/usage through a real server: each caller sees what the policy lets them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INTERN, RESEARCHER, make_job, make_pytorchjob, review
from served import Served, bearer, start_api_server, stop_server

token = bearer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_api_server(tmp_path_factory.mktemp("api-audit"))
    with served.client() as c:
        c.post("/validate", json=review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())
        c.post("/validate", json=review(make_job(gpus=8).named("research", "b1").obj(), user="bob",
                                        groups=RESEARCHER).body())
        c.post("/validate", json=review(make_job(gpus=8).named("research", "n1").obj(), user="nina",
                                        groups=("gpu-researchers", "team:nlp")).body())
    yield served
    stop_server(served)


def test_everyone_reads_their_own_records(server: Served) -> None:
    with server.client() as c:
        r = c.get("/api/v1/audit", headers=token("alice", list(INTERN)))
    assert r.status_code == 200
    assert [(i["user"], i["decision"]) for i in r.json()["items"]] == [("alice", "denied")]


def test_a_lead_reads_their_teams_records_and_an_admin_all(server: Served) -> None:
    with server.client() as c:
        lead = c.get("/api/v1/audit", headers=token("lena", ["gpu-leads", "team:vision"])).json()["items"]
        admin = c.get("/api/v1/audit", headers=token("root", ["gpu-admins"])).json()["items"]
    assert {i["user"] for i in lead} == {"alice", "bob"}
    assert {i["user"] for i in admin} == {"alice", "bob", "nina"}


def test_filters_export_and_verify(server: Served) -> None:
    admin = token("root", ["gpu-admins"])
    with server.client() as c:
        r = c.get("/api/v1/audit", params={"decision": "allowed", "since": "1h"}, headers=admin)
        assert {i["user"] for i in r.json()["items"]} == {"bob", "nina"}
        r = c.get("/api/v1/audit/export", params={"user": "nina"}, headers=admin)
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line)["user"] for line in r.text.splitlines()] == ["nina"]
        assert c.get("/api/v1/audit", params={"since": "yesterday-ish"}, headers=admin).status_code == 400
        r = c.get("/api/v1/audit/verify", headers=admin)
        assert r.json() == {"ok": True, "records": 3, "first_bad": None, "problem": ""}
        r = c.get("/api/v1/audit/verify", headers=token("lena", ["gpu-leads", "team:vision"]))
        assert r.status_code == 403 and "ask an administrator" in r.json()["reason"]
        assert c.get("/api/v1/audit").status_code == 401


def test_usage_is_scoped_like_the_audit(server: Served) -> None:
    with server.client() as c:
        assert c.get("/api/v1/usage", headers=token("root", ["gpu-admins"])).json() == {
            "users": {"bob": 8, "nina": 8}, "teams": {"vision": 8, "nlp": 8},
            "limits": {"users": {"bob": 1024, "nina": 1024}, "teams": {"vision": None, "nlp": None}}}
        assert c.get("/api/v1/usage", headers=token("bob", list(RESEARCHER))).json() == {
            "users": {"bob": 8}, "teams": {}, "limits": {"users": {"bob": 1024}, "teams": {}}}
        assert c.get("/api/v1/usage", headers=token("lena", ["gpu-leads", "team:vision"])).json() == {
            "users": {}, "teams": {"vision": 8}, "limits": {"users": {}, "teams": {"vision": None}}}


def test_the_openapi_document_lists_every_endpoint(server: Served) -> None:
    with server.client() as c:
        paths = c.get("/api/v1/openapi.json").json()["paths"]
    assert {"/whoami", "/audit", "/audit/export", "/audit/verify", "/usage"} <= set(paths)


def test_tokens_stay_out_of_the_log(server: Served) -> None:
    log = Path(server.state.parent / "server.log").read_text()
    assert "eyJ" not in log
