"""The real `gpu-gateway serve`: /api/v1/approvals and /api/v1/grants over HTTP, with HS256 tokens."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import delete_review, make_job, make_pytorchjob, review
from served import Served, start_server, stop_server

SECRET = b"0123456789abcdef0123456789abcdef-local"
PEOPLE = {
    "alice": ["gpu-interns", "team:vision"],
    "carol": ["gpu-interns", "team:vision"],
    "erin": ["gpu-leads", "team:vision"],
    "dave": ["gpu-leads", "team:nlp"],
    "root": ["gpu-admins"],
    "bob": ["gpu-researchers", "team:nlp"],
    "lena": ["gpu-leads", "team:vision"],
    "nate": ["gpu-leads", "team:nlp"],
}


@pytest.fixture
def server(tmp_path: Path, policy_dir: Path) -> Iterator[Served]:
    (tmp_path / "secret").write_bytes(SECRET)
    served = start_server(tmp_path, "--jwt-secret-file", str(tmp_path / "secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", tls=False, policy_dir=policy_dir)
    yield served
    stop_server(served)


def auth(user: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "local", "aud": "gpuctl", "sub": user, "groups": PEOPLE[user], "iat": now, "exp": now + 60}
    return {"authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def post(c: httpx.Client, path: str, user: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return c.post(f"/api/v1{path}", json=body if body is not None else {}, headers=auth(user))


ASK = {"action": "launch", "kind": "PyTorchJob", "namespace": "research", "name": "llm-400b", "gpus": 64,
       "reason": "paper deadline"}


def test_approvals_over_http(server: Served) -> None:
    with server.client() as c:
        r = post(c, "/approvals", "alice", ASK)
        assert r.status_code == 201, r.text
        approval = r.json()
        assert approval["state"] == "pending" and approval["requester"] == "alice" and approval["gpus"] == 64
        path = f"/approvals/{approval['id']}"
        r = post(c, f"{path}/approve", "alice")
        assert r.status_code == 403 and "a different person must approve" in r.json()["reason"]
        assert post(c, f"{path}/approve", "carol").status_code == 403
        r = post(c, f"{path}/approve", "dave")
        assert r.status_code == 403 and "another team's" in r.json()["reason"]
        assert c.get("/api/v1/approvals", headers=auth("dave")).json()["items"] == []
        assert c.get(f"/api/v1{path}", headers=auth("dave")).status_code == 404
        assert [a["id"] for a in c.get("/api/v1/approvals", headers=auth("erin")).json()["items"]] == [approval["id"]]
        r = post(c, f"{path}/approve", "erin", {"comment": "go"})
        assert r.status_code == 200 and r.json()["state"] == "approved" and r.json()["reviewer"] == "erin"
        assert post(c, f"{path}/deny", "root").status_code == 409
        assert c.get(f"/api/v1{path}", headers=auth("alice")).json()["state"] == "approved"
        assert post(c, "/approvals", "alice", {**ASK, "reason": " "}).status_code == 400
        assert post(c, "/approvals", "alice", {**ASK, "expires_in_s": 8 * 86400}).status_code == 400
        assert post(c, "/approvals", "alice", {**ASK, "gpus": 0}).status_code == 400
        denied = post(c, "/approvals", "alice", {**ASK, "action": "kill", "gpus": None}).json()
        assert post(c, f"/approvals/{denied['id']}/deny", "root", {"comment": "no"}).json()["state"] == "denied"
        assert post(c, "/approvals/apv-nope/approve", "root").status_code == 404
        paths = c.get("/api/v1/openapi.json").json()["paths"]
        assert paths["/approvals/{id}/approve"]["post"]["operationId"] == "approvalApprove" and "/grants" in paths


def test_grants_over_http_are_audited_as_break_glass(server: Served) -> None:
    grant = {"user": "carol", "role": "lead", "reason": "incident 42", "expires_in_s": 600}
    with server.client() as c:
        r = post(c, "/grants", "erin", grant)
        assert r.status_code == 403 and "may not grant" in r.json()["reason"]
        assert post(c, "/grants", "root", {**grant, "reason": ""}).status_code == 400
        assert post(c, "/grants", "root", {**grant, "expires_in_s": 2 * 86400}).status_code == 400
        assert post(c, "/grants", "root", {k: v for k, v in grant.items() if k != "expires_in_s"}).status_code == 400
        r = post(c, "/grants", "root", grant)
        assert r.status_code == 201 and r.json()["state"] == "active"
        grant_id = r.json()["id"]
        assert c.get("/api/v1/whoami", headers=auth("carol")).json()["role"] == "lead"  # whoami: grants apply
        assert [g["id"] for g in c.get("/api/v1/grants", headers=auth("carol")).json()["items"]] == [grant_id]
        assert c.get("/api/v1/grants", headers=auth("alice")).json()["items"] == []
        r = c.delete(f"/api/v1/grants/{grant_id}", headers=auth("root"))
        assert r.status_code == 200 and r.json()["state"] == "revoked"
        assert c.delete(f"/api/v1/grants/{grant_id}", headers=auth("root")).status_code == 409
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "audit", "list", "--grants",
                          "--state", str(server.state)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()[1:]
    assert len(lines) == 2 and all("BREAK-GLASS" in line and " grant " in line for line in lines)


def validate(c: httpx.Client, user: str, obj: dict[str, Any], *, delete: bool = False) -> dict[str, Any]:
    """The webhook's answer to `user` creating (or deleting) `obj`."""
    groups = tuple(PEOPLE[user])
    body = delete_review(obj, user=user, groups=groups) if delete else review(obj, user=user, groups=groups)
    answer: dict[str, Any] = c.post("/validate", json=body.body()).json()["response"]
    return answer


def test_only_someone_with_rights_over_the_owner_approves_a_kill(server: Served) -> None:
    """alice (intern, vision) asks to kill bob's (nlp) job: her own lead lena has no rights over
    it and may not approve; nate, bob's lead, may, and so may an admin."""
    jobs = [make_job(gpus=8).named("research", name).obj() for name in ("bobs-run", "bobs-other")]
    with server.client() as c:
        assert all(validate(c, "bob", job)["allowed"] for job in jobs)
        denied = validate(c, "alice", jobs[0], delete=True)
        assert not denied["allowed"] and "belongs to bob (team nlp)" in denied["status"]["message"]
        ask = {"action": "kill", "kind": "Job", "namespace": "research", "name": "bobs-run", "reason": "stuck"}
        r = post(c, "/approvals", "alice", ask)
        assert r.status_code == 201, r.text
        approval = r.json()
        assert (approval["target_owner"], approval["target_team"]) == ("bob", "nlp")
        path = f"/approvals/{approval['id']}"

        r = post(c, f"{path}/approve", "lena")
        assert r.status_code == 403 and r.json()["reason"] == (
            "user lena (role lead) may not approve a kill of Job research/bobs-run: it belongs to bob (team nlp), "
            "and lena may kill only their team's workloads")
        assert c.get(f"/api/v1{path}", headers=auth("alice")).json()["state"] == "pending"
        assert not validate(c, "alice", jobs[0], delete=True)["allowed"]  # still pending: nothing lifted
        assert post(c, f"{path}/approve", "bob").status_code == 403  # the owner holds no `approve`
        listed = c.get("/api/v1/approvals", headers=auth("nate")).json()["items"]
        assert [(a["id"], a["target_owner"]) for a in listed] == [(approval["id"], "bob")]

        r = post(c, f"{path}/approve", "nate", {"comment": "ok, bob is away"})
        assert r.status_code == 200 and r.json()["state"] == "approved" and r.json()["reviewer"] == "nate"
        assert validate(c, "alice", jobs[0], delete=True)["allowed"]
        assert c.get(f"/api/v1{path}", headers=auth("alice")).json()["state"] == "used"

        other = post(c, "/approvals", "alice", {**ask, "name": "bobs-other"}).json()
        assert post(c, f"/approvals/{other['id']}/approve", "lena").status_code == 403
        r = post(c, f"/approvals/{other['id']}/approve", "root")
        assert r.status_code == 200 and r.json()["state"] == "approved"
        assert validate(c, "alice", jobs[1], delete=True)["allowed"]

        records = c.get("/api/v1/audit", params={"action": "kill"}, headers=auth("root")).json()["items"]
        assert [(r["user"], r["decision"], r["rule"]) for r in records] == [
            ("alice", "denied", "ownership"), ("alice", "denied", "ownership"), ("alice", "allowed", "approval"),
            ("alice", "allowed", "approval")]
        assert approval["id"] in records[2]["reason"] and "approved by nate" in records[2]["reason"]


def test_the_requesters_lead_still_approves_a_launch_over_a_limit(server: Served) -> None:
    job = make_pytorchjob(workers=3, gpus=8).named("research", "llm-400b").obj()  # 32 GPUs: over alice's 8
    with server.client() as c:
        assert not validate(c, "alice", job)["allowed"]
        approval = post(c, "/approvals", "alice", {**ASK, "gpus": 32}).json()
        assert approval["target_owner"] is None
        assert post(c, f"/approvals/{approval['id']}/approve", "nate").status_code == 403  # not alice's team
        r = post(c, f"/approvals/{approval['id']}/approve", "lena")
        assert r.status_code == 200 and r.json()["state"] == "approved"
        assert validate(c, "alice", job)["allowed"]
