"""Warnings where a person would want one, through a real gateway and `gpuctl`: a quota set below
what is held, used against limit, an approval past a team's cap (to the approver and, as a kubectl
warning, to the requester), live break-glass grants in `whoami`, and who may approve an exception."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_job, review
from served import Served, api_token, bearer, start_api_server, stop_server

ADMIN = ["gpu-admins"]
LEAD = ["gpu-leads", "team:vision"]
NLP_LEAD = ["gpu-leads", "team:nlp"]
RESEARCHER = ["gpu-researchers", "team:vision"]
INTERN = ["gpu-interns", "team:vision"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    served = start_api_server(tmp_path)
    yield served
    stop_server(served)


def gpuctl(server: Served, user: str, groups: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")}
    env.update(GPUCTL_SERVER=server.url, GPUCTL_TOKEN=api_token(user, groups),
               GPUCTL_CONFIG=str(server.state.parent / "gpuctl.json"))
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def submit(server: Served, obj: dict[str, Any], user: str, groups: list[str], **kw: Any) -> dict[str, Any]:
    with server.client() as c:
        answer: dict[str, Any] = c.post("/validate", json=review(obj, user=user, groups=tuple(groups),
                                                                 **kw).body()).json()["response"]
    return answer


def job(name: str, gpus: int, pods: int = 1) -> dict[str, Any]:
    return make_job(gpus=gpus, parallelism=pods).named("research", name).obj()


def test_a_team_quota_below_what_it_holds_is_set_with_a_warning_and_stops_nothing(server: Served) -> None:
    assert submit(server, job("a", 8, 2), "bob", RESEARCHER)["allowed"]
    out = gpuctl(server, "lena", LEAD, "quota", "set", "team:vision", "--max-concurrent-gpus", "8",
                 "--reason", "share the pool")
    assert out.returncode == 0, out.stderr
    assert "team:vision: max_concurrent_gpus=8" in out.stdout
    assert out.stderr == (
        "warning: team vision holds 16 GPUs, above its cap of 8; running workloads keep running (nothing is "
        "stopped, and scaling down is always allowed), new launches and scale-ups are denied until usage is "
        "under the cap\n")
    # What the warning says is what the gateway does.
    assert "team vision may hold at most 8 GPUs at once; 16 are in use" in \
        submit(server, job("b", 1), "bob", RESEARCHER)["status"]["message"]
    assert not submit(server, job("a", 8, 3), "bob", RESEARCHER, operation="UPDATE", old=job("a", 8, 2))["allowed"]
    assert submit(server, job("a", 8, 1), "bob", RESEARCHER, operation="UPDATE", old=job("a", 8, 2))["allowed"]
    assert submit(server, None, "bob", RESEARCHER, operation="DELETE", old=job("a", 8, 1))["allowed"]
    assert submit(server, job("b", 8), "bob", RESEARCHER)["allowed"]
    # A cap that holds gives no warning; JSON carries the warnings too.
    out = gpuctl(server, "lena", LEAD, "-o", "json", "quota", "set", "team:vision", "--max-concurrent-gpus", "64",
                 "--reason", "more")
    assert out.returncode == 0 and out.stderr == "" and json.loads(out.stdout)["warnings"] == []


def test_a_role_quota_below_what_users_hold_names_them(server: Served) -> None:
    assert submit(server, job("a", 8), "alice", INTERN)["allowed"]
    assert submit(server, job("b", 8), "alice", INTERN)["allowed"]
    with server.client() as c:
        r = c.put("/api/v1/quotas/role:intern", headers=bearer("root", ADMIN),
                  json={"max_concurrent_gpus": 4, "reason": "tighten"})
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == [
        "users of role intern hold more GPUs than its cap of 4: alice (16); running workloads keep running "
        "(nothing is stopped, and scaling down is always allowed), new launches and scale-ups are denied until "
        "usage is under the cap"]


def test_quota_get_and_usage_show_used_against_the_limit(server: Served) -> None:
    assert submit(server, job("a", 8), "bob", RESEARCHER)["allowed"]
    assert gpuctl(server, "root", ADMIN, "quota", "set", "team:vision", "--max-concurrent-gpus", "64",
                  "--reason", "budget").returncode == 0
    out = gpuctl(server, "lena", LEAD, "quota", "get", "team:vision")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "TARGET       USED  MAX CONCURRENT GPUS  MAX GPUS PER WORKLOAD  SOURCE",
        "team:vision  8     64                   -                      runtime"]
    # Used as GET /usage scopes it: an intern reads no team's usage.
    out = gpuctl(server, "ivan", INTERN, "-o", "json", "quota", "get", "team:vision")
    assert json.loads(out.stdout)["used"] is None
    out = gpuctl(server, "bob", RESEARCHER, "usage")
    assert out.stdout.splitlines() == ["BY    NAME  GPUS NOW  LIMIT", "user  bob   8         1024"]
    out = gpuctl(server, "root", ADMIN, "-o", "json", "usage")
    assert json.loads(out.stdout)["limits"] == {"users": {"bob": 1024}, "teams": {"vision": 64}}


def test_an_approval_past_the_team_cap_warns_the_approver_and_the_requester(server: Served) -> None:
    assert submit(server, job("a", 8), "bob", RESEARCHER)["allowed"]
    assert gpuctl(server, "root", ADMIN, "quota", "set", "team:vision", "--max-concurrent-gpus", "16",
                  "--reason", "budget").returncode == 0
    big = job("big", 8, 2)
    denied = submit(server, big, "alice", INTERN)
    assert not denied["allowed"]
    out = gpuctl(server, "alice", INTERN, "-o", "json", "request", "launch", "Job", "research/big", "--gpus", "16",
                 "--reason", "deadline")
    approval = json.loads(out.stdout)["id"]
    out = gpuctl(server, "lena", LEAD, "approve", approval)
    assert out.returncode == 0 and "is approved" in out.stdout
    assert out.stderr == ("warning: this approval lets alice launch up to 16 GPUs past team vision's cap of 16: "
                          "the team holds 8 now and would hold 24\n")
    admitted = submit(server, big, "alice", INTERN)
    assert admitted["allowed"] is True
    assert admitted["warnings"] == [
        f"gpu-gateway: launch of Job research/big is admitted by approval {approval} past a cap: team vision may "
        f"hold at most 16 GPUs at once; 8 are in use and this asks for 16 more"]


def test_whoami_shows_a_live_break_glass_grant_and_its_expiry(server: Served) -> None:
    out = gpuctl(server, "root", ADMIN, "-o", "json", "grant", "ivan", "lead", "--reason", "on-call", "--for", "30m")
    grant = json.loads(out.stdout)
    out = gpuctl(server, "ivan", INTERN, "-o", "json", "whoami")
    me = json.loads(out.stdout)
    assert me["role"] == "lead"
    assert me["grants"] == [{"id": grant["id"], "role": "lead", "expires_at": grant["expires_at"],
                             "reason": "on-call", "granter": "root", "in_force": True}]
    out = gpuctl(server, "ivan", INTERN, "whoami")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[3].split()[:2] == ["GRANT", "ROLE"] and lines[4].split()[:2] == [grant["id"], "lead"]
    until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(grant["expires_at"]))
    assert until in lines[4] and ("29m" in lines[4] or "30m" in lines[4]) and "yes" in lines[4]
    assert gpuctl(server, "root", ADMIN, "revoke", grant["id"]).returncode == 0
    out = gpuctl(server, "ivan", INTERN, "-o", "json", "whoami")
    assert json.loads(out.stdout)["grants"] == [] and json.loads(out.stdout)["role"] == "intern"


def test_a_denial_names_who_may_approve_an_exception_and_they_may(server: Served) -> None:
    owned = make_job(gpus=8).named("research", "x").owned_by("bob", "nlp").obj()
    assert submit(server, job("x", 8), "bob", ["gpu-researchers", "team:nlp"])["allowed"]
    denied = submit(server, None, "alice", INTERN, operation="DELETE", old=owned)
    assert denied["status"]["message"].endswith(
        "belongs to bob (team nlp). Ask bob, or ask for an exception (gpuctl request kill Job research/x "
        "--reason ...): a lead in team nlp (group gpu-leads) or an admin (group gpu-admins) may approve it.")
    # Subjects bound at run time are named too, in the policy in force.
    with server.client() as c:
        assert c.put("/api/v1/roles/bindings/user:nate", headers=bearer("root", ADMIN),
                     json={"roles": ["lead"], "reason": "lead of nlp"}).status_code == 200
    denied = submit(server, None, "alice", INTERN, operation="DELETE", old=owned)
    assert "a lead in team nlp (group gpu-leads, user nate)" in denied["status"]["message"]
    out = gpuctl(server, "alice", INTERN, "-o", "json", "request", "kill", "Job", "research/x", "--reason", "stuck")
    approval = json.loads(out.stdout)["id"]
    assert gpuctl(server, "nate", NLP_LEAD, "approve", approval).returncode == 0
    assert submit(server, None, "alice", INTERN, operation="DELETE", old=owned)["allowed"]
