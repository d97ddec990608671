"""Run-time role bindings, quotas and policy replacement through the real server's admin API.

Two `gpu-gateway serve` processes share one state file, as replicas share a database: a
change made through one is enforced by the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_pod, review
from served import Served, bearer, start_api_server, stop_server

ADMIN = ["gpu-admins"]
ADMIN2 = ["gpu-admins"]
LEAD = ["gpu-leads", "team:vision"]
OTHER_LEAD = ["gpu-leads", "team:nlp"]
INTERN = ["gpu-interns", "team:vision"]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    (tmp_path / "b").mkdir()
    a = start_api_server(tmp_path)
    b_dir = tmp_path / "b"
    secret = tmp_path / "jwt.secret"
    from served import start_server

    b = start_server(b_dir, "--state", str(a.state), "--jwt-secret-file", str(secret), "--jwt-issuer", "local",
                     "--jwt-audience", "gpuctl", tls=False)
    yield a, b
    stop_server(b)
    stop_server(a)


def admit(server: Served, user: str, groups: list[str], gpus: int, name: str, *,
          dry_run: bool = True) -> dict[str, Any]:
    """The decision on a pod launch; a dry run (the default) reserves nothing, so probes can repeat."""
    obj = make_pod(gpus).obj()
    obj["metadata"]["name"] = name
    body = review(obj, user=user, groups=tuple(groups), dry_run=dry_run).body()
    with server.client() as c:
        answer: dict[str, Any] = c.post("/validate", json=body).json()["response"]
    return answer


def eventually(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_quota_set_through_one_replica_is_enforced_by_the_other(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    with a.client() as c:
        assert admit(b, "ivan", INTERN, 8, "p1", dry_run=False)["allowed"]
        # An intern may hold 16 GPUs by role; a lead of another team may not change vision's quota.
        r = c.put("/api/v1/quotas/user:ivan", json={"max_concurrent_gpus": 8, "reason": "x"},
                  headers=bearer("o", OTHER_LEAD))
        assert r.status_code == 403
        r = c.put("/api/v1/quotas/user:ivan", json={"max_concurrent_gpus": 8, "reason": "misbehaving"},
                  headers=bearer("root", ADMIN))
        assert r.status_code == 200, r.text
        assert r.json()["old"] is None and r.json()["new"] == {"max_concurrent_gpus": 8}
        denied = eventually(lambda: not admit(b, "ivan", INTERN, 8, f"p{time.monotonic_ns()}")["allowed"])
        assert denied
        # A lead sets their own team's cap; it applies on the other replica too.
        r = c.put("/api/v1/quotas/team:vision", json={"max_concurrent_gpus": 8, "reason": "share"},
                  headers=bearer("erin", LEAD))
        assert r.status_code == 200, r.text
        assert eventually(lambda: not admit(b, "jane", INTERN, 4, f"q{time.monotonic_ns()}")["allowed"])
        got = c.get("/api/v1/quotas/team:vision", headers=bearer("ivan", INTERN)).json()
        assert got["quota"] == {"max_concurrent_gpus": 8} and got["source"] == "runtime"
        assert c.put("/api/v1/quotas/team:vision", json={"max_concurrent_gpus": -1, "reason": "x"},
                     headers=bearer("root", ADMIN)).status_code == 400
        assert c.put("/api/v1/quotas/role:nobody", json={"max_concurrent_gpus": 1, "reason": "x"},
                     headers=bearer("root", ADMIN)).status_code == 400
        # Removing the run-time quotas brings the bundle's back.
        for target in ("user:ivan", "team:vision"):
            r = c.request("DELETE", f"/api/v1/quotas/{target}", json={"reason": "done"}, headers=bearer("root", ADMIN))
            assert r.status_code == 200
        assert eventually(lambda: admit(b, "ivan", INTERN, 8, f"r{time.monotonic_ns()}")["allowed"])
        items = {q["target"]: q for q in c.get("/api/v1/quotas", headers=bearer("root", ADMIN)).json()["items"]}
        assert items["role:intern"]["quota"] == {"max_gpus_per_workload": 8, "max_concurrent_gpus": 16}
        # Every change is an audit record with the old and the new value.
        rows = c.get("/api/v1/audit", params={"action": "settings"}, headers=bearer("root", ADMIN)).json()["items"]
        assert [r["name"] for r in rows] == ["quota/user:ivan", "quota/team:vision", "quota/user:ivan",
                                            "quota/team:vision"]
        assert rows[0]["changes"][0]["new"] == {"max_concurrent_gpus": 8} and rows[2]["changes"][0]["new"] is None
        assert c.get("/api/v1/audit/verify", headers=bearer("root", ADMIN)).json()["ok"]


def test_role_binding_at_run_time(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    with a.client() as c:
        assert not admit(b, "zoe", ["newcomers"], 1, "z0")["allowed"]  # no role
        r = c.put("/api/v1/roles/bindings/group:newcomers", json={"roles": ["intern"], "reason": "onboarding"},
                  headers=bearer("erin", LEAD))
        assert r.status_code == 403  # bindings are for admins
        r = c.put("/api/v1/roles/bindings/group:newcomers", json={"roles": ["intern"], "reason": "onboarding"},
                  headers=bearer("root", ADMIN))
        assert r.status_code == 200, r.text
        assert eventually(lambda: admit(b, "zoe", ["newcomers"], 1, f"z{time.monotonic_ns()}")["allowed"])
        assert c.get("/api/v1/whoami", headers=bearer("zoe", ["newcomers"])).json()["role"] == "intern"
        roles = c.get("/api/v1/roles", headers=bearer("zoe", ["newcomers"])).json()
        binding = next(x for x in roles["bindings"] if x["subject"] == "group:newcomers")
        assert binding == {"subject": "group:newcomers", "roles": ["intern"], "source": "runtime"}
        # An empty list takes the bundle's roles away too.
        r = c.put("/api/v1/roles/bindings/group:gpu-interns", json={"roles": [], "reason": "freeze"},
                  headers=bearer("root", ADMIN))
        assert r.status_code == 200
        assert eventually(lambda: not admit(b, "ivan", INTERN, 1, f"i{time.monotonic_ns()}")["allowed"])
        assert c.put("/api/v1/roles/bindings/group:x", json={"roles": ["emperor"], "reason": "x"},
                     headers=bearer("root", ADMIN)).status_code == 400
        assert c.put("/api/v1/roles/bindings/nobody", json={"roles": ["intern"], "reason": "x"},
                     headers=bearer("root", ADMIN)).status_code == 400


def _files(c: httpx.Client) -> dict[str, str]:
    files: dict[str, str] = c.get("/api/v1/policy", headers=bearer("root", ADMIN)).json()["files"]
    return {k: files[k] for k in ("policy.csv", "limits.yaml")}


def test_policy_replace_needs_a_second_admin_and_reaches_every_replica(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    with a.client() as c:
        files = _files(c)
        proposed = {**files, "limits.yaml": files["limits.yaml"].replace("max_gpus_per_workload: 8 ",
                                                                         "max_gpus_per_workload: 2 ")}
        assert proposed != files
        broken = {**files, "policy.csv": files["policy.csv"] + "\np, intern, fly, own\n"}
        r = c.post("/api/v1/policy/diff", json={"files": broken}, headers=bearer("root", ADMIN))
        assert r.json()["valid"] is False and "fly" in r.json()["error"]
        r = c.put("/api/v1/policy", json={"files": broken, "reason": "x"}, headers=bearer("root", ADMIN))
        assert r.status_code == 400
        diff = c.post("/api/v1/policy/diff", json={"files": proposed}, headers=bearer("root", ADMIN)).json()
        assert diff["valid"] and "-    max_gpus_per_workload: 8" in diff["diff"] and diff["needs_approval"]
        r = c.put("/api/v1/policy", json={"files": proposed, "reason": "tighten"}, headers=bearer("root", ADMIN))
        assert r.status_code == 403 and r.json()["error"] == "second_person" and diff["digest"] in r.json()["reason"]
        assert c.put("/api/v1/policy", json={"files": proposed, "reason": "x"},
                     headers=bearer("erin", LEAD)).status_code == 403
        ask = {"action": "policy-change", "name": diff["digest"], "reason": "tighten interns"}
        approval = c.post("/api/v1/approvals", json=ask, headers=bearer("root", ADMIN)).json()
        assert c.post(f"/api/v1/approvals/{approval['id']}/approve", json={},
                      headers=bearer("root", ADMIN)).status_code == 403  # not oneself
        assert c.post(f"/api/v1/approvals/{approval['id']}/approve", json={},
                      headers=bearer("erin", LEAD)).status_code == 403  # a lead may not approve policy
        assert c.post(f"/api/v1/approvals/{approval['id']}/approve", json={},
                      headers=bearer("ada", ADMIN2)).status_code == 200
        # Approved for exactly that proposal: another one is still refused.
        other = {**proposed, "limits.yaml": proposed["limits.yaml"] + "\n# note\n"}
        assert c.put("/api/v1/policy", json={"files": other, "reason": "x"},
                     headers=bearer("root", ADMIN)).status_code == 403
        r = c.put("/api/v1/policy", json={"files": proposed, "reason": "tighten"}, headers=bearer("root", ADMIN))
        assert r.status_code == 200, r.text
        assert eventually(lambda: not admit(b, "ivan", INTERN, 4, f"w{time.monotonic_ns()}")["allowed"])
        with b.client() as cb:
            got = cb.get("/api/v1/policy", headers=bearer("root", ADMIN)).json()
        assert got["source"] == "api" and got["digest"] == diff["digest"]
        # Used once: the same change again needs a new approval.
        assert c.put("/api/v1/policy", json={"files": proposed, "reason": "again"},
                     headers=bearer("root", ADMIN)).status_code == 403
        rows = c.get("/api/v1/audit", params={"action": "settings"}, headers=bearer("root", ADMIN)).json()["items"]
        assert rows[-1]["kind"] == "Policy" and approval["id"] in rows[-1]["reason"]


def test_gpuctl_roles_quota_and_policy(replicas: tuple[Served, Served], tmp_path: Path) -> None:
    a, _ = replicas
    from served import api_token

    env = {**os.environ, "GPUCTL_SERVER": a.url, "GPUCTL_TOKEN": api_token("root", ADMIN),
           "GPUCTL_CONFIG": str(tmp_path / "gpuctl.json")}

    def gpuctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    r = gpuctl("quota", "set", "team:vision", "--max-concurrent-gpus", "64", "--reason", "budget")
    assert r.returncode == 0, r.stderr
    assert "team:vision: max_concurrent_gpus=64" in r.stdout
    r = gpuctl("quota", "get", "team:vision")
    assert r.returncode == 0 and "64" in r.stdout and "runtime" in r.stdout
    r = gpuctl("-o", "json", "quota", "get")
    assert r.returncode == 0 and '"role:intern"' in r.stdout
    assert gpuctl("quota", "set", "team:vision", "--reason", "x").returncode == 2
    assert gpuctl("quota", "set", "planet:x", "--max-concurrent-gpus", "1", "--reason", "x").returncode == 2
    r = gpuctl("roles", "bind", "user:zoe", "researcher", "--reason", "promotion")
    assert r.returncode == 0, r.stderr
    r = gpuctl("roles")
    assert "user:zoe" in r.stdout and "researcher" in r.stdout and "runtime" in r.stdout
    assert gpuctl("roles", "unbind", "user:zoe", "--reason", "done").returncode == 0
    out = tmp_path / "policy"
    assert gpuctl("policy", "get", "--to", str(out)).returncode == 0
    (out / "limits.yaml").write_text((out / "limits.yaml").read_text() + "\n# reviewed\n")
    r = gpuctl("policy", "diff", "--from", str(out))
    assert r.returncode == 0 and "+# reviewed" in r.stdout
    r = gpuctl("policy", "apply", "--from", str(out), "--reason", "note")
    assert r.returncode == 1 and "second admin" in r.stderr
    r = gpuctl("policy", "request", "--from", str(out), "--reason", "note")
    assert r.returncode == 0, r.stderr
    approval_id = r.stdout.split()[1]
    env2 = {**env, "GPUCTL_TOKEN": api_token("ada", ADMIN2)}
    assert subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", "approve", approval_id], env=env2,
                          capture_output=True, text=True, timeout=60).returncode == 0
    r = gpuctl("policy", "apply", "--from", str(out), "--reason", "note")
    assert r.returncode == 0, r.stderr
    assert "in force" in r.stdout
    (out / "policy.csv").write_text("p, intern, fly, own\n")
    assert gpuctl("policy", "diff", "--from", str(out)).returncode == 1


def test_a_stored_policy_that_no_longer_compiles_keeps_the_last_good_and_is_audited(service: Any) -> None:
    from gateway.admission.ports import Actor, SettingChange
    from gateway.audit.ports import AuditQuery

    good = service.policies.policy.version
    broken = {"policy.csv": "p, intern, fly, own\n", "limits.yaml": "role_order: [intern]\n"}
    service.store.put_setting(SettingChange("policy", "bundle", broken, "bad"), Actor("root"), now=time.time())
    service.runtime.refresh(time.time(), force=True)
    assert service.policies.policy.version == good
    assert "stored policy" in (service.policies.last_error or "")
    rows = eventually(lambda: [r for r in service.store.audit_rows(AuditQuery(action="policy-reload"))])
    assert rows and rows[0]["decision"] == "denied" and "fly" in rows[0]["reason"]
