"""Owners can see: /api/v1/workloads, /api/v1/queue, describe, and their gpuctl commands, through a
real gateway whose ledger holds running, queued and controller-made workloads; each caller sees
what the audit would show them (their own, their team's as a lead, all as an administrator)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from click.testing import CliRunner, Result
from cluster_sim import Cluster
from conftest import POLICIES, RESEARCHER, container, make_deployment, make_job, make_pytorchjob, review
from postgres_server import each_store, pg_url, postgres  # noqa: F401 - fixtures
from served import API_SECRET, Served, api_token, bearer, start_server, stop_server

from gateway.admission.kinds import KindRegistry
from gateway.admission.ports import Actor
from gateway.cli.gpuctl import main as gpuctl_main
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, load_bundle
from gateway.scheduling.holdings import queue_items, resource_kinds, workload_items
from gateway.scheduling.ports import limits_from
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

NLP = ("gpu-researchers", "team:nlp")
LEAD = ("gpu-leads", "team:vision")
ADMIN = ("gpu-admins",)
OPERATOR = "system:serviceaccount:kubeflow:training-operator"
GATEWAY = "system:serviceaccount:gpu-gateway:gpu-gateway"


def _admit(c: Any, obj: dict[str, Any], user: str, groups: tuple[str, ...], uid: str) -> dict[str, Any]:
    """What the API server does with a CREATE: /mutate, the patch applied, a UID, /validate."""
    answer = c.post("/mutate", json=review(obj, user=user, groups=groups).body()).json()["response"]
    if "patch" in answer:
        obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    obj["metadata"]["uid"] = uid
    verdict = c.post("/validate", json=review(obj, user=user, groups=groups).body()).json()["response"]
    assert verdict["allowed"], verdict
    return obj


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Team vision capped at 24 GPUs and in queue mode: bob's 16-GPU PyTorchJob was released by a
    queue pass (its worker pod, made by the training operator, is recorded uncharged under it);
    carol's 16-GPU Job waits, over the cap; nina (team nlp) runs a Job in `research` and one in `other`."""
    tmp = tmp_path_factory.mktemp("workloads")
    policies = tmp / "policies"
    shutil.copytree(POLICIES, policies)
    limits = (policies / "limits.yaml").read_text()
    limits = re.sub(r"(?m)^teams: \{\}$", "teams: {vision: {max_concurrent_gpus: 24}}", limits, count=1)
    limits = limits.replace("  roles: {}\n  teams: {}", "  roles: {}\n  teams: {vision: queue}")
    (policies / "limits.yaml").write_text(limits)
    (tmp / "jwt.secret").write_text(API_SECRET)
    served = start_server(tmp, "--jwt-secret-file", str(tmp / "jwt.secret"), "--jwt-issuer", "local",
                          "--jwt-audience", "gpuctl", tls=False, policy_dir=policies)
    with served.client() as c:
        llm = _admit(c, make_pytorchjob(workers=1, gpus=8).named("research", "llm-a").obj(), "bob", RESEARCHER,
                     "uid-llm-a")
        _queue_pass(served.state, policies)
        worker = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            **llm["spec"]["pytorchReplicaSpecs"]["Worker"]["template"].get("metadata", {}),
            "name": "llm-a-worker-0", "namespace": "research",
            "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "llm-a",
                                 "uid": "uid-llm-a", "controller": True}]},
                  "spec": {"containers": [container(8, name="pytorch")]}}
        _admit(c, worker, OPERATOR, ("system:serviceaccounts",), "uid-worker-0")
        _admit(c, make_job(gpus=8, parallelism=2).named("research", "c1").obj(), "carol", RESEARCHER, "uid-c1")
        _admit(c, make_job(gpus=8).named("research", "n1").obj(), "nina", NLP, "uid-n1")
        _admit(c, make_job(gpus=8).named("other", "n2").obj(), "nina", NLP, "uid-n2")
    yield served
    stop_server(served)


def _queue_pass(state: Path, policies: Path) -> None:
    """What the controller's pass does (every gang counted as complete): release what fits."""
    store = SQLiteStore(state)
    try:
        result = store.run_queue(limits_from(load_bundle(policies)), now=time.time(), actor=Actor(GATEWAY))
    finally:
        store.close()
    assert [w.key for w in result.plan.released] == ["pytorchjobs.kubeflow.org/research/llm-a"]


def get(server: Served, path: str, caller: str, groups: tuple[str, ...], **params: str) -> Any:
    with server.client() as c:
        r = c.get(f"/api/v1{path}", params=params, headers=bearer(caller, list(groups)))
    return r.status_code, r.json()


def names(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i["namespace"], i["name"], i["state"]) for i in body["items"]]


# ------------------------------------------------------------------ GET /api/v1/workloads


def test_an_administrator_sees_every_workload_holding_or_waiting_for_gpus(server: Served) -> None:
    status, body = get(server, "/workloads", "root", ADMIN)
    assert status == 200
    # The training operator's pod is charged with its PyTorchJob: listed once, as the PyTorchJob.
    assert names(body) == [("other", "n2", "running"), ("research", "c1", "queued"),
                           ("research", "llm-a", "running"), ("research", "n1", "running")]
    llm = body["items"][2]
    assert {k: v for k, v in llm.items() if k != "since"} == {
        "kind": "PyTorchJob", "namespace": "research", "name": "llm-a", "owner": "bob", "team": "vision",
        "gpus": 16, "pods": 2, "state": "running"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", llm["since"])
    assert body["items"][1]["kind"] == "Job" and body["items"][1]["pods"] == 2


def test_each_person_sees_their_own_a_lead_their_teams(server: Served) -> None:
    assert names(get(server, "/workloads", "bob", RESEARCHER)[1]) == [("research", "llm-a", "running")]
    assert names(get(server, "/workloads", "carol", RESEARCHER)[1]) == [("research", "c1", "queued")]
    assert names(get(server, "/workloads", "lena", LEAD)[1]) == [("research", "c1", "queued"),
                                                                ("research", "llm-a", "running")]
    assert get(server, "/workloads", "eve", ("gpu-interns", "team:vision"))[1] == {"items": []}


def test_filters_by_owner_team_and_namespace(server: Served) -> None:
    assert names(get(server, "/workloads", "root", ADMIN, user="bob")[1]) == [("research", "llm-a", "running")]
    assert names(get(server, "/workloads", "root", ADMIN, team="nlp", namespace="other")[1]) == [
        ("other", "n2", "running")]
    # A filter never widens the scope: bob asking for nina's gets nothing.
    assert get(server, "/workloads", "bob", RESEARCHER, user="nina")[1] == {"items": []}


# ------------------------------------------------------------------ GET /api/v1/queue


def test_the_queue_is_what_gpu_gateway_queue_prints_scoped_like_the_audit(server: Served) -> None:
    cli = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "queue", "--state", str(server.state),
                          "-o", "json"], capture_output=True, text=True, timeout=60, check=True)
    local = json.loads(cli.stdout)
    status, api = get(server, "/queue", "root", ADMIN)
    assert status == 200
    without_wait = [{k: v for k, v in i.items() if k != "waited_s"} for i in api["items"]]
    assert without_wait == [{k: v for k, v in i.items() if k != "waited_s"} for i in local["items"]]
    [item] = api["items"]
    assert (item["position"], item["name"], item["owner"], item["gpus"], item["pods"]) == (1, "c1", "carol", 16, 2)
    assert "team vision may hold at most 24 GPUs" in item["reason"]
    assert [i["name"] for i in get(server, "/queue", "carol", RESEARCHER)[1]["items"]] == ["c1"]
    assert get(server, "/queue", "bob", RESEARCHER)[1] == {"items": []}
    assert [i["name"] for i in get(server, "/queue", "lena", LEAD)[1]["items"]] == ["c1"]


# ------------------------------------------------------------------ describe


def test_describe_names_owner_charges_queue_place_and_history(server: Served) -> None:
    status, c1 = get(server, "/workloads/Job/research/c1", "carol", RESEARCHER)
    assert status == 200
    assert (c1["owner"], c1["team"], c1["state"], c1["charged"], c1["gpus"], c1["pods"]) == (
        "carol", "vision", "queued", False, 16, 2)
    assert c1["queue"]["position"] == 1 and c1["since"] == c1["queue"]["queued_at"]
    assert [(h["action"], h["rule"]) for h in c1["history"]] == [("launch", "queued")]
    status, llm = get(server, "/workloads/pytorchjobs/research/llm-a", "lena", LEAD)
    assert status == 200 and (llm["kind"], llm["resource"], llm["state"], llm["charged"], llm["queue"]) == (
        "PyTorchJob", "pytorchjobs.kubeflow.org", "running", True, None)
    assert [(h["user"], h["action"], h["rule"]) for h in llm["history"]] == [
        ("bob", "launch", "queued"), (GATEWAY, "schedule", "queue-release")]
    status, short = get(server, "/workloads/pytorchjobs/research/llm-a", "lena", LEAD, limit="1")
    assert [h["rule"] for h in short["history"]] == ["queue-release"]


def test_describe_of_what_a_controller_made_says_it_holds_no_gpus_of_its_own(server: Served) -> None:
    status, pod = get(server, "/workloads/Pod/research/llm-a-worker-0", "bob", RESEARCHER)
    assert status == 200
    assert (pod["owner"], pod["state"], pod["charged"], pod["gpus"]) == ("bob", "recorded", False, 8)


def test_describe_is_scoped_and_refuses_bad_input(server: Served) -> None:
    status, body = get(server, "/workloads/Job/research/c1", "bob", RESEARCHER)
    assert status == 404 and body["error"] == "not_found"
    assert get(server, "/workloads/Job/research/c1", "nina", NLP)[0] == 404
    assert get(server, "/workloads/Job/research/nothing", "root", ADMIN)[0] == 404
    status, body = get(server, "/workloads/Job/research/c1", "root", ADMIN, limit="0")
    assert status == 400 and "limit" in body["reason"]


# ------------------------------------------------------------------ gpuctl


def gpuctl(server: Served, tmp_path: Path, user: str, groups: tuple[str, ...], *args: str) -> Result:
    env = {"GPUCTL_CONFIG": str(tmp_path / "none.json"), "GPUCTL_SERVER": server.url,
           "GPUCTL_TOKEN": api_token(user, list(groups))}
    return CliRunner().invoke(gpuctl_main, list(args), env=env)


def _no_times(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "TIME", text)


def test_gpuctl_workloads_table_and_json(server: Served, tmp_path: Path) -> None:
    out = gpuctl(server, tmp_path, "lena", LEAD, "workloads", "-n", "research")
    assert out.exit_code == 0, out.output
    assert _no_times(out.stdout).splitlines() == [
        "NAMESPACE  KIND        NAME   OWNER  TEAM    GPUS  PODS  STATE    SINCE",
        "research   Job         c1     carol  vision  16    2     queued   TIME",
        "research   PyTorchJob  llm-a  bob    vision  16    2     running  TIME",
    ]
    out = gpuctl(server, tmp_path, "root", ADMIN, "-o", "json", "workloads", "--team", "nlp")
    assert out.exit_code == 0 and json.loads(out.stdout) == get(server, "/workloads", "root", ADMIN, team="nlp")[1]
    out = gpuctl(server, tmp_path, "root", ADMIN, "workloads", "-n", "research", "-A")
    assert out.exit_code == 2 and "not both" in out.output


def test_gpuctl_queue_shows_the_same_json_and_the_queue_table(server: Served, tmp_path: Path) -> None:
    out = gpuctl(server, tmp_path, "carol", RESEARCHER, "-o", "json", "queue")
    assert out.exit_code == 0
    body = json.loads(out.stdout)
    assert [(i["position"], i["name"]) for i in body["items"]] == [(1, "c1")]
    out = gpuctl(server, tmp_path, "carol", RESEARCHER, "queue")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["POS", "WORKLOAD", "OWNER", "TEAM", "GPUS", "PODS", "PRIO", "WAITED", "REASON"]
    assert lines[1].split()[:7] == ["1", "jobs.batch", "research/c1", "carol", "vision", "16", "2"]


def test_gpuctl_describe(server: Served, tmp_path: Path) -> None:
    out = gpuctl(server, tmp_path, "carol", RESEARCHER, "describe", "Job", "research/c1")
    assert out.exit_code == 0, out.output
    lines = _no_times(out.stdout).splitlines()
    assert lines[:6] == [
        "Name:     research/c1",
        "Kind:     Job (jobs.batch)",
        "Owner:    carol",
        "Team:     vision",
        "State:    queued since TIME UTC",
        "Charges:  none while it waits; 16 GPUs in 2 GPU pods once released, to carol (team vision)",
    ]
    assert lines[6].startswith("Queue:    position 1, waited ") and "team vision may hold at most 24" in lines[6]
    assert lines[7] == "History:" and "carol (researcher)  launch  ALLOWED" in lines[8]
    out = gpuctl(server, tmp_path, "bob", RESEARCHER, "describe", "Job", "research/c1")
    assert out.exit_code == 1 and "(404)" in out.stderr
    out = gpuctl(server, tmp_path, "bob", RESEARCHER, "describe", "Job", "c1")
    assert out.exit_code == 2 and "NAMESPACE/NAME" in out.output


# ------------------------------------------------------------------ since


def test_since_is_when_it_was_admitted_or_released_not_when_it_last_changed(policy_dir: Path, each_store: Any) -> None:  # noqa: F811
    store = each_store
    limits = policy_dir / "limits.yaml"
    limits.write_text(limits.read_text().replace("  roles: {}\n  teams: {}", "  roles: {}\n  teams: {nlp: queue}"))
    now = [1_000.0]
    cluster = Cluster(AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=lambda: now[0]))
    assert cluster.create(make_deployment(gpus=8, replicas=1).named("research", "serve").obj(), "bob",
                          RESEARCHER).allowed
    assert cluster.create(make_job(gpus=8).named("research", "n1").obj(), "nina", NLP).allowed  # queued
    now[0] = 5_000.0
    assert cluster.scale("Deployment", "serve", 2, "bob", RESEARCHER).allowed
    store.run_queue(limits_from(load_bundle(policy_dir)), now=7_000.0, actor=Actor(GATEWAY))
    waiting = queue_items(store.queue_rows(), now[0])
    items = workload_items(store.reservations(), waiting, resource_kinds(KindRegistry()))
    assert [(i["name"], i["gpus"], i["state"], i["since"]) for i in items] == [
        ("n1", 8, "running", "1970-01-01T01:56:40+00:00"),      # released at 7000
        ("serve", 24, "running", "1970-01-01T00:16:40+00:00"),  # admitted at 1000, scaled at 5000
    ]
