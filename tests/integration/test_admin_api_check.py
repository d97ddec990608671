"""POST /api/v1/check through a real server: the decisions `gpu-gateway check -o json` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import INTERN, make_job, review
from served import Served, api_token, bearer, start_api_server, stop_server

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


def cli_check(manifest: Path, *args: str, state: Path | None = None) -> list[dict[str, object]]:
    """`gpu-gateway check -o json`, reading `state` (a running gateway's, read only) when given."""
    store = ["--state", str(state)] if state is not None else []
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "check", "-f", str(manifest),
                          "-o", "json", *store, *args], capture_output=True, text=True, timeout=60, check=False)
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
    assert results == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1],
                                state=server.state)
    assert usage == {"users": {}, "teams": {}, "limits": {"users": {}, "teams": {}}}  # nothing reserved


def test_kill_as_another_owner(server: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(BIG))
    body = {"user": "alice", "groups": list(INTERN), "manifest": BIG, "action": "kill", "owner": "bob"}
    with server.client() as c:
        got = c.post("/api/v1/check", headers=ALICE, json=body).json()["results"]
    assert got == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1],
                            "--action", "kill", "--owner", "bob", state=server.state)
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
    assert results == cli_check(manifest, "--user", "alice", "--group", INTERN[0], "--group", INTERN[1],
                                state=server.state)


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


# ------------------------------------------------------------------ what is in use


RESEARCHER_BOB = ["gpu-researchers", "team:vision"]


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[Served]:
    """A gateway whose store holds bob's 8-GPU Job research/a, with team vision capped at 16 GPUs."""
    served = start_api_server(tmp_path)
    with served.client() as c:
        capped = c.put("/api/v1/quotas/team:vision", headers=ADMIN,
                       json={"max_concurrent_gpus": 16, "reason": "share the pool"})
        assert capped.status_code == 200, capped.text
        running = make_job(gpus=8).named("research", "a").obj()
        assert c.post("/validate", json=review(running, user="bob", groups=tuple(RESEARCHER_BOB)).body()).json()[
            "response"]["allowed"]
    yield served
    stop_server(served)


def test_a_launch_the_gateway_denies_on_the_team_quota_is_denied_by_check(busy: Served, tmp_path: Path) -> None:
    job = make_job(gpus=8, parallelism=2).named("research", "b").obj()
    body = {"user": "bob", "groups": RESEARCHER_BOB, "manifest": job}
    bob = token("bob", RESEARCHER_BOB)
    with busy.client() as c:
        audit_before = c.get("/api/v1/audit", headers=ADMIN).json()["items"]
        [checked] = c.post("/api/v1/check", headers=bob, json=body).json()["results"]
        assert c.get("/api/v1/audit", headers=ADMIN).json()["items"] == audit_before  # nothing written
        assert c.get("/api/v1/usage", headers=ADMIN).json()["teams"] == {"vision": 8}
        admitted = c.post("/validate", json=review(job, user="bob", groups=tuple(RESEARCHER_BOB)).body()).json()
    assert admitted["response"]["allowed"] is False
    assert (checked["allowed"], checked["rule"]) == (False, "team-quota")
    assert checked["reason"] == admitted["response"]["status"]["message"]
    assert checked["usage_read"] is True and checked["usage_note"] == ""
    assert checked["caps"] == [
        {"rule": "workload-gpu-limit", "subject": "role researcher", "limit": 256, "used": None, "asked": 16,
         "fits": True},
        {"rule": "user-quota", "subject": "user bob (role researcher)", "limit": 1024, "used": 8, "asked": 16,
         "fits": True},
        {"rule": "team-quota", "subject": "team vision", "limit": 16, "used": 8, "asked": 16, "fits": False},
    ]
    manifest = tmp_path / "b.json"
    manifest.write_text(json.dumps(job))
    who = ("--user", "bob", "--group", RESEARCHER_BOB[0], "--group", RESEARCHER_BOB[1])
    assert cli_check(manifest, *who, state=busy.state) == [checked]
    [offline] = cli_check(manifest, *who)
    assert offline["allowed"] is True and offline["usage_read"] is False
    assert offline["usage_note"] == ("usage not read: no --state or --database-url given; "
                                     "GPUs in use count as 0")
    assert [c["used"] for c in offline["caps"]] == [None, None, None]


def test_a_change_is_checked_against_the_ledgers_record_less_its_own_gpus(busy: Served) -> None:
    grown = make_job(gpus=8, parallelism=2).named("research", "a").obj()  # bob's running job, 8 -> 16
    body = {"user": "lena", "groups": ["gpu-leads", "team:vision"], "manifest": grown, "action": "modify"}
    with busy.client() as c:
        [checked] = c.post("/api/v1/check", headers=token("lena", ["gpu-leads", "team:vision"]),
                           json=body).json()["results"]
    # The owner comes from the ledger (the manifest carries no annotation); bob's 8 GPUs are the job's own.
    assert checked["allowed"] is True and checked["charged_to"] == "bob"
    assert [(c["rule"], c["used"], c["asked"], c["fits"]) for c in checked["caps"]] == [
        ("workload-gpu-limit", None, 16, True), ("user-quota", 0, 16, True), ("team-quota", 0, 16, True)]


def test_gpuctl_check_prints_the_caps_and_exits_1(busy: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "b.yaml"
    manifest.write_text(yaml.safe_dump(make_job(gpus=8, parallelism=2).named("research", "b").obj()))
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", "--server", busy.url, "--token",
                          api_token("bob", RESEARCHER_BOB), "check", "-f", str(manifest)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "GPUCTL_CONFIG": str(tmp_path / "none.json")})
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith("DENIED: launch of Job research/b by bob (role researcher)")
    assert "  cap team-quota, team vision: 8 in use + 16 asked, limit 16 (over)\n" in out.stdout
    assert "usage not read" not in out.stdout
