"""POST /api/v1/check through a real server: the decisions `gpu-gateway check -o json` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import INTERN, make_job
from served import Served, bearer, start_api_server, stop_server

BIG = make_job(gpus=8, parallelism=4).named("research", "big-run").obj()
SMALL = make_job(gpus=1).named("research", "small").obj()


token = bearer


ALICE = token("alice", list(INTERN))
ADMIN = token("root", ["gpu-admins"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_api_server(tmp_path_factory.mktemp("api-check"))
    yield served
    stop_server(served)


def cli_check(manifest: Path, *args: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "check", "-f", str(manifest),
                          "-o", "json", *args], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_results_are_what_gpu_gateway_check_prints(server: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump_all([SMALL, BIG]))
    body = {"user": "alice", "groups": list(INTERN), "manifest": manifest.read_text()}
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, json=body)
        as_objects = c.post("/api/v1/check", headers=ALICE, json={**body, "manifest": [SMALL, BIG]})
        usage = c.get("/api/v1/usage", headers=ADMIN).json()
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [r["allowed"] for r in results] == [True, False]
    assert results == as_objects.json()["results"]
    assert results == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1])
    assert usage == {"users": {}, "teams": {}}


def test_kill_as_another_owner(server: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(BIG))
    body = {"user": "alice", "groups": list(INTERN), "manifest": BIG, "action": "kill", "owner": "bob"}
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, json=body).json()["results"]
    assert got == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1],
                            "--action", "kill", "--owner", "bob")
    assert got[0]["allowed"] is False and got[0]["action"] == "kill"
    assert got[0]["charged_to"] == "bob"


def test_results_say_who_the_gpus_are_charged_to(server: Served, tmp_path: Path) -> None:
    parked = make_job(gpus=8).named("research", "parked").obj()
    parked["spec"]["suspend"] = True
    cpu = make_job(gpus=0).named("research", "cpu").obj()
    body = {"user": "alice", "groups": list(INTERN), "manifest": [SMALL, BIG, parked, cpu]}
    with server.client() as c:
        results = c.post("/api/v1/check", headers=ALICE, json=body).json()["results"]
    assert [r["charged_to"] for r in results] == ["alice", "alice", "alice", None]
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump_all([SMALL, BIG, parked, cpu]))
    assert results == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1])


def test_checking_as_someone_else_needs_an_administrator(server: Served) -> None:
    body = {"user": "bob", "groups": ["gpu-researchers"], "manifest": BIG}
    with server.client() as c:
        refused = c.post("/api/v1/check", headers=ALICE, json=body)
        lead = c.post("/api/v1/check", headers=token("lena", ["gpu-leads", "team:vision"]), json=body)
        admin = c.post("/api/v1/check", headers=ADMIN, json=body)
        anonymous = c.post("/api/v1/check", json=body)
    assert refused.status_code == 403 and "only check as themselves" in refused.json()["reason"]
    assert lead.status_code == 403
    assert admin.status_code == 200 and admin.json()["results"][0]["user"] == "bob"
    assert anonymous.status_code == 401


@pytest.mark.parametrize("body", [
    {"user": "alice", "manifest": "a: [unclosed"},
    {"user": "alice", "manifest": 42},
    {"user": "alice", "manifest": []},
    {"user": "alice", "manifest": {"kind": "Job"}},
    {"user": "alice", "manifest": BIG, "action": "steal"},
    {"user": "alice", "manifest": BIG, "groups": "gpu-interns"},
    {"manifest": BIG},
])
def test_unreadable_input_is_400(server: Served, body: dict[str, object]) -> None:
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, json=body)
    assert got.status_code == 400 and got.json()["error"] == "bad_request", got.text


def test_a_body_that_is_not_json_is_400(server: Served) -> None:
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, content=b"{nope")
    assert got.status_code == 400


def test_the_openapi_document_lists_check(server: Served) -> None:
    with server.client() as c:
        assert "post" in c.get("/api/v1/openapi.json").json()["paths"]["/check"]
