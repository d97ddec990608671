"""`gpuctl policy diff` lists the running and queued workloads a proposal would have denied,
through a real gateway whose store holds them, scoped like the audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_job, review
from served import API_SECRET, Served, api_token, start_server, stop_server

VISION = {"bob": ["gpu-researchers", "team:vision"], "carl": ["gpu-researchers", "team:vision"],
          "alice": ["gpu-interns", "team:vision"]}


@pytest.fixture
def busy(tmp_path: Path, policy_dir: Path) -> Iterator[Served]:
    """Team vision capped at 64 GPUs and researchers in queue mode: alice runs 2 x 8 GPUs; bob's 48
    and carl's 32 wait in the queue (no controller releases them here)."""
    limits = yaml.safe_load((policy_dir / "limits.yaml").read_text())
    limits["teams"] = {"vision": {"max_concurrent_gpus": 64}}
    limits["scheduling"]["roles"] = {"researcher": "queue"}
    (policy_dir / "limits.yaml").write_text(yaml.safe_dump(limits))
    (tmp_path / "jwt.secret").write_text(API_SECRET)
    served = start_server(tmp_path, "--jwt-secret-file", str(tmp_path / "jwt.secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", tls=False, policy_dir=policy_dir)
    for user, name, gpus, pods in (("bob", "r1", 8, 6), ("alice", "i1", 8, 1), ("alice", "i2", 8, 1),
                                   ("carl", "r2", 8, 4)):
        obj = make_job(gpus=gpus, parallelism=pods).named("research", name).obj()
        with served.client() as c:
            answer = c.post("/validate", json=review(obj, user=user, groups=tuple(VISION[user])).body()).json()
        assert answer["response"]["allowed"], answer
    yield served
    stop_server(served)


def gpuctl(server: Served, user: str, groups: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")}
    env.update(GPUCTL_SERVER=server.url, GPUCTL_TOKEN=api_token(user, groups),
               GPUCTL_CONFIG=str(server.state.parent / "gpuctl.json"))
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def proposal(server: Served, tmp_path: Path) -> Path:
    """Interns hold 8 GPUs at most, researchers launch 40 at most, team vision holds 24."""
    out = tmp_path / "proposal"
    assert gpuctl(server, "root", ["gpu-admins"], "policy", "get", "--to", str(out)).returncode == 0
    limits = yaml.safe_load((out / "limits.yaml").read_text())
    limits["roles"]["intern"]["max_concurrent_gpus"] = 8
    limits["roles"]["researcher"]["max_gpus_per_workload"] = 40
    limits["teams"] = {"vision": {"max_concurrent_gpus": 24}}
    (out / "limits.yaml").write_text(yaml.safe_dump(limits))
    return out


def denied(server: Served, user: str, groups: list[str], directory: Path) -> list[dict[str, Any]]:
    out = gpuctl(server, user, groups, "-o", "json", "policy", "diff", "--from", str(directory))
    assert out.returncode == 0, out.stderr
    found: list[dict[str, Any]] = json.loads(out.stdout)["would_deny"]
    return found


def test_policy_diff_lists_what_the_proposal_would_have_denied(busy: Served, tmp_path: Path) -> None:
    directory = proposal(busy, tmp_path)
    found = denied(busy, "root", ["gpu-admins"], directory)
    assert [(w["state"], w["name"], w["owner"], w["gpus"], w["rule"]) for w in found] == [
        ("running", "i2", "alice", 8, "user-quota"),          # i1 is admitted first; i2 then holds nothing
        ("queued", "r1", "bob", 48, "workload-gpu-limit"),
        ("queued", "r2", "carl", 32, "team-quota"),           # 32 never fit a cap of 24: denied, not queued
    ]
    assert found[0] == {"state": "running", "resource": "jobs.batch", "namespace": "research", "name": "i2",
                        "owner": "alice", "team": "vision", "role": "intern", "gpus": 8, "rule": "user-quota",
                        "reason": "user alice (role intern) may hold at most 8 GPUs at once; 8 are in use and "
                                  "this asks for 8 more"}
    table = gpuctl(busy, "root", ["gpu-admins"], "policy", "diff", "--from", str(directory))
    assert table.returncode == 0, table.stderr
    assert "# it would have denied 3 running or queued workload(s):" in table.stdout
    assert "queued   jobs.batch research/r2  carl   vision  32    team-quota" in table.stdout
    # Nothing was written: the same proposal, the same answer; the workloads are where they were.
    assert denied(busy, "root", ["gpu-admins"], directory) == found


def test_each_caller_sees_only_the_workloads_they_may_read(busy: Served, tmp_path: Path) -> None:
    directory = proposal(busy, tmp_path)
    assert [w["name"] for w in denied(busy, "alice", VISION["alice"], directory)] == ["i2"]
    assert [w["name"] for w in denied(busy, "lena", ["gpu-leads", "team:vision"], directory)] == ["i2", "r1", "r2"]
    assert denied(busy, "nate", ["gpu-leads", "team:nlp"], directory) == []
    out = gpuctl(busy, "nate", ["gpu-leads", "team:nlp"], "policy", "diff", "--from", str(directory))
    assert out.stdout.rstrip().endswith("# it would have denied none of the running and queued workloads you may read")
