"""Queue mode at admission: gated pods, queued launches, the guarded gate, and queue passes,
through AdmissionService and a real SQLite store (and once through the served webhook)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from builders_queue import ACTOR, GATEWAY, JOB_CONTROLLER, delete_job, launch_job, mutated, queue_policies, validate
from conftest import POLICIES, RESEARCHER, make_job, make_pod, review
from served import start_server, stop_server

from gateway.admission.scheduling_settings import QUOTA_GATE, WORKLOAD_ANNOTATION
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, load_bundle
from gateway.scheduling.ports import limits_from
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore


@pytest.fixture
def queued(tmp_path: Path) -> tuple[AdmissionService, SQLiteStore]:
    store = SQLiteStore(tmp_path / "state.db")
    service = AdmissionService(PolicyHolder(queue_policies(tmp_path / "policies")), store, metrics=Metrics())
    yield service, store
    store.close()


def test_a_queue_mode_launch_waits_with_every_pod_gated(queued) -> None:
    service, store = queued
    job, pods = launch_job(service, "train", pods=3)
    key = "jobs.batch/research/train"
    assert job["spec"]["template"]["metadata"]["annotations"][WORKLOAD_ANNOTATION] == key
    assert all(p["spec"]["schedulingGates"] == [{"name": QUOTA_GATE}] for p in pods)
    [row] = store.queue_rows()
    assert (row["owner"], row["gpus"], row["pods"]) == ("bob", 24, 3)
    assert store.gpus_by_user().get("bob", 0) == 0  # not charged while it waits
    result = store.run_queue(limits_from(service.policies.policy), now=service.clock(), actor=ACTOR,
                             pods_seen={key: 3})
    assert [w.key for w in result.plan.released] == [key]
    assert store.gpus_by_user()["bob"] == 24 and store.queue_rows() == []
    records = [r for r in store.audit_rows() if r["rule"] in ("queued", "queue-release")]
    assert [(r["rule"], r["decision"]) for r in records] == [("queued", "allowed"), ("queue-release", "allowed")]
    assert store.verify().ok


def test_a_second_launch_over_the_cap_waits_and_goes_when_the_first_is_deleted(queued) -> None:
    service, store = queued
    limits = limits_from(service.policies.policy)
    first, first_pods = launch_job(service, "first", pods=3)   # 24 of 32
    store.run_queue(limits, now=service.clock(), actor=ACTOR)
    launch_job(service, "second", pods=2)             # 16 more: over 32
    result = store.run_queue(limits, now=service.clock(), actor=ACTOR)
    assert result.plan.released == ()
    [row] = store.queue_rows()
    assert row["position"] == 1 and "user bob holds 24 of 32" in row["reason"]
    delete_job(service, first, first_pods)
    result = store.run_queue(limits, now=service.clock(), actor=ACTOR)
    assert [w.key for w in result.plan.released] == ["jobs.batch/research/second"]
    assert store.gpus_by_user()["bob"] == 16


def test_a_gang_larger_than_the_cap_on_its_own_is_still_denied(queued) -> None:
    service, _ = queued
    job = mutated(service, make_job(gpus=8, parallelism=5).named("research", "big").obj(),
                  user="bob", groups=RESEARCHER)
    answer = validate(service, job, user="bob", groups=RESEARCHER)
    assert not answer["allowed"] and "at most 32 GPUs at once" in answer["status"]["message"]


def test_gangs_whose_pods_do_not_all_appear_are_dropped_with_a_reason(queued) -> None:
    service, store = queued
    launch_job(service, "stuck", pods=2)
    policy = service.policies.policy
    later = service.clock() + policy.scheduling.gang_timeout_s + 1
    result = store.run_queue(limits_from(policy), now=later, actor=ACTOR, pods_seen={"jobs.batch/research/stuck": 1})
    [(key, reason)] = result.dropped
    assert key == "jobs.batch/research/stuck" and "only 1 of its 2 GPU pods appeared" in reason
    assert store.queue_rows() == []
    assert next(r for r in store.audit_rows() if r["rule"] == "gang-timeout")["reason"].endswith(reason)
    assert store.verify().ok


def test_only_the_gateway_may_remove_the_gate(queued) -> None:
    service, store = queued
    _, pods = launch_job(service, "train", pods=1)
    gated = pods[0]
    ungated = json.loads(json.dumps(gated))
    ungated["spec"].pop("schedulingGates")
    answer = validate(service, ungated, old=gated, operation="UPDATE", user="bob", groups=RESEARCHER)
    assert not answer["allowed"] and "only the gateway may remove" in answer["status"]["message"]
    user, groups = JOB_CONTROLLER
    assert not validate(service, ungated, old=gated, operation="UPDATE", user=user, groups=groups)["allowed"]
    assert validate(service, ungated, old=gated, operation="UPDATE", user=GATEWAY,
                    groups=("system:serviceaccounts",))["allowed"]
    denied = [r for r in store.audit_rows() if r["rule"] == "scheduling-gate"]
    assert len(denied) == 2


def test_a_gated_pod_may_not_preset_its_node_or_arrive_without_the_gate(queued) -> None:
    service, _ = queued
    pod = mutated(service, make_pod(gpus=8).named("research", "direct").obj(), user="bob", groups=RESEARCHER)
    assert pod["spec"]["schedulingGates"] == [{"name": QUOTA_GATE}]
    pinned = json.loads(json.dumps(pod))
    pinned["spec"]["nodeName"] = "gpu-node-1"
    answer = validate(service, pinned, user="bob", groups=RESEARCHER)
    assert not answer["allowed"] and "spec.nodeName" in answer["status"]["message"]
    bare = json.loads(json.dumps(pod))
    bare["spec"].pop("schedulingGates")
    answer = validate(service, bare, user="bob", groups=RESEARCHER)
    assert not answer["allowed"] and "must carry" in answer["status"]["message"]
    assert validate(service, pod, user="bob", groups=RESEARCHER)["allowed"]


def test_reject_mode_keeps_denying_and_gates_nothing(service, store) -> None:
    job = make_job(gpus=8, parallelism=200).named("research", "huge").obj()
    stamped = mutated(service, job, user="bob", groups=RESEARCHER)
    assert WORKLOAD_ANNOTATION not in stamped["spec"]["template"]["metadata"]["annotations"]
    answer = validate(service, stamped, user="bob", groups=RESEARCHER)
    assert not answer["allowed"]
    pod = mutated(service, make_pod(gpus=8).named("research", "p").obj(), user="bob", groups=RESEARCHER)
    assert "schedulingGates" not in pod["spec"]
    assert store.queue_rows() == []


def test_priority_classes_a_role_may_not_use_queue_at_default_priority(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    policies = queue_policies(tmp_path / "policies", priority_classes={"high": 1000})
    service = AdmissionService(PolicyHolder(policies), store, metrics=Metrics())
    job = make_job(gpus=8, parallelism=1).named("research", "urgent").obj()
    job["spec"]["template"]["spec"]["priorityClassName"] = "high"
    job = mutated(service, job, user="bob", groups=RESEARCHER)
    assert validate(service, job, user="bob", groups=RESEARCHER)["allowed"]
    assert store.queue_rows()[0]["priority"] == 1000  # researchers may use any class
    store.close()


@pytest.mark.parametrize(("scheduling", "message"), [
    ({"over_quota": "wait"}, "scheduling.over_quota: 'wait' is not reject or queue"),
    ({"roles": {"intern": "later"}}, "scheduling.roles.intern"),
    ({"priority_classes": {"high": "top"}}, "scheduling.priority_classes.high must be an integer"),
    ({"team_shares": {"vision": 0}}, "scheduling.team_shares.vision must be a positive number"),
    ({"budget_period": "fortnight"}, "is not rolling-<N>d, day, week or month"),
    ({"budgets": {"groups": {}}}, "scheduling.budgets: unknown setting(s) groups"),
    ({"queue_everything": True}, "scheduling: unknown setting(s) queue_everything"),
])
def test_bad_scheduling_settings_are_refused_with_the_setting_named(tmp_path: Path, scheduling, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_bundle(queue_policies(tmp_path / "p", **scheduling))
    assert message in str(info.value)


def test_the_bundled_policy_keeps_reject() -> None:
    policy = load_bundle(POLICIES)
    assert policy.scheduling.over_quota.value == "reject" and not policy.scheduling.queueing


def test_gpu_gateway_queue_lists_position_and_reason(queued, tmp_path: Path) -> None:
    service, store = queued
    limits = limits_from(service.policies.policy)
    launch_job(service, "first", pods=3)
    store.run_queue(limits, now=service.clock(), actor=ACTOR)
    launch_job(service, "second", pods=2)
    launch_job(service, "third", pods=2)
    store.run_queue(limits, now=service.clock(), actor=ACTOR)
    state = str(tmp_path / "state.db")
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "queue", "--state", state, "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True)
    items = json.loads(out.stdout)["items"]
    assert [(i["position"], i["name"], i["gpus"], i["pods"]) for i in items] == [(1, "second", 16, 2),
                                                                                  (2, "third", 16, 2)]
    assert "user bob holds 24 of 32" in items[0]["reason"] and items[0]["owner"] == "bob"
    table = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "queue", "--state", state],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert table.splitlines()[1].startswith("1    jobs.batch research/second")
    both = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "queue"],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "exactly one of --state" in both.stderr


def test_served_gateway_takes_its_identity_from_the_service_account_flag(tmp_path: Path) -> None:
    """Over TLS on loopback: the queue's gate goes on at /mutate, and only the identity given with
    --service-account may lift it at /validate; /metrics has the queue length."""
    policies = queue_policies(tmp_path / "policies")
    served = start_server(tmp_path, "--service-account", "system:serviceaccount:ops:gpu-gw", policy_dir=policies)
    try:
        with served.client() as client:
            pod = make_pod(gpus=8).named("research", "direct").obj()
            answer = client.post("/mutate", json=review(pod, user="bob", groups=RESEARCHER).body()).json()
            gated = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["response"]["patch"])))
            assert gated["spec"]["schedulingGates"] == [{"name": QUOTA_GATE}]
            ungated = json.loads(json.dumps(gated))
            ungated["spec"]["schedulingGates"] = []

            def lift(user: str) -> dict[str, Any]:
                body = review(ungated, old=gated, operation="UPDATE", user=user,
                              groups=("system:serviceaccounts",)).body()
                return client.post("/validate", json=body).json()["response"]

            assert not lift(GATEWAY)["allowed"]  # the default identity is not this gateway's
            assert lift("system:serviceaccount:ops:gpu-gw")["allowed"]
            metrics = client.get("/metrics").text
            assert "gpu_gateway_queue_length 0.0" in metrics
    finally:
        assert stop_server(served) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", ["reject", "queue"])
def test_a_spent_gpu_hour_budget_denies_or_queues_by_mode(tmp_path: Path, mode: str) -> None:
    roles = {"researcher": "queue"} if mode == "queue" else {}
    policies = queue_policies(tmp_path / "policies", roles=roles, budget_period="rolling-7d",
                              budgets={"users": {"bob": 4}, "teams": {}})
    store = SQLiteStore(tmp_path / "state.db")
    clock = Clock()
    service = AdmissionService(PolicyHolder(policies), store, metrics=Metrics(), clock=clock)
    limits = limits_from(service.policies.policy)
    try:
        first, first_pods = launch_job(service, "first", pods=1)  # 8 GPUs
        store.run_queue(limits, now=clock.now, actor=ACTOR)
        assert store.gpus_by_user()["bob"] == 8
        clock.now += 1800  # half an hour of 8 GPUs: 4 GPU-hours, the whole budget
        job = mutated(service, make_job(gpus=8, parallelism=1).named("research", "second").obj(),
                      user="bob", groups=RESEARCHER)
        answer = validate(service, job, user="bob", groups=RESEARCHER)
        if mode == "reject":
            assert not answer["allowed"]
            assert "GPU-hour budget of user bob (4.0 of 4 GPU-hours) is spent" in answer["status"]["message"]
            return
        assert answer["allowed"] and store.queue_rows()[0]["name"] == "second"
        result = store.run_queue(limits, now=clock.now, actor=ACTOR)
        assert result.plan.released == ()
        assert "cannot start: the GPU-hour budget of user bob is spent" in result.plan.held[0].reason
        delete_job(service, first, first_pods)
        clock.now += 8 * 86400  # the rolling week has moved past the hours `first` used
        result = store.run_queue(limits, now=clock.now, actor=ACTOR)
        assert [w.key for w in result.plan.released] == ["jobs.batch/research/second"]
    finally:
        store.close()


def test_a_configured_minimum_releases_the_gang_once_that_many_pods_exist(queued) -> None:
    service, store = queued
    job = make_job(gpus=8, parallelism=3).named("research", "elastic").annotated(
        gpu_gateway_io_min_pods="2").obj()
    job = mutated(service, job, user="bob", groups=RESEARCHER)
    assert validate(service, job, user="bob", groups=RESEARCHER)["allowed"]
    [row] = store.queue_rows()
    assert (row["pods"], row["gpus"]) == (2, 24)  # two pods must exist; all 24 GPUs are charged
    limits = limits_from(service.policies.policy)
    key = "jobs.batch/research/elastic"
    result = store.run_queue(limits, now=service.clock(), actor=ACTOR, pods_seen={key: 1})
    assert result.plan.released == () and "1 of 2 appeared" in result.plan.held[0].reason
    result = store.run_queue(limits, now=service.clock(), actor=ACTOR, pods_seen={key: 2})
    assert [w.key for w in result.plan.released] == [key] and store.gpus_by_user()["bob"] == 24
