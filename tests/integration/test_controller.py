"""The controller through the real kubernetes client, against the API server test double
(tests/k8s_api_double.py) on loopback, with a real SQLite store and the real admission service."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from builders_queue import JOB_CONTROLLER, job_pods, launch_job, mutated, queue_policies, review_body, validate
from cluster_sim import HPA, SYSTEM
from cluster_sim import Cluster as SimCluster
from conftest import RESEARCHER, make_deployment, make_job, make_pod, make_pytorchjob
from k8s_api_double import FakeApiServer
from prometheus_client import CollectorRegistry, generate_latest
from served import start_server, stop_server

from gateway.admission.policy import OWNER_ANNOTATION, TEAM_ANNOTATION
from gateway.admission.ports import Actor
from gateway.admission.scheduling_settings import QUEUE_ANNOTATION, QUOTA_GATE
from gateway.kube import Cluster, ClusterError, api_client
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.controller.cache import ClusterView
from gateway.scheduling.controller.ledger import LedgerMetrics, LedgerRebuild
from gateway.scheduling.controller.loop import Controller, ControllerSettings
from gateway.scheduling.reconcile import FORGET_GRACE_S, read_pod
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def world(tmp_path: Path) -> Any:
    double = FakeApiServer()
    url = double.start()
    store = SQLiteStore(tmp_path / "state.db")
    policies = PolicyHolder(queue_policies(tmp_path / "policies"))
    service = AdmissionService(policies, store, metrics=Metrics())
    clock = Clock()

    def controller(holder: str = "replica-a") -> Controller:
        settings = ControllerSettings(holder=holder, interval_s=1, lease_duration_s=15)
        metrics = Metrics()
        metrics.watch_queue(store.queue_rows)
        return Controller(Cluster(api_client(host=url)), store, policies, settings, registry=metrics.registry,
                          clock=clock)

    class World:
        pass

    w = World()
    w.double, w.store, w.service, w.clock, w.controller = double, store, service, clock, controller
    yield w
    double.stop()
    store.close()


def create_pods(world: Any, pods: list[dict[str, Any]], phase: str = "Pending") -> None:
    for pod in pods:
        world.double.add_pod(pod, phase=phase)


def test_a_queued_gang_is_released_whole_when_it_fits(world) -> None:
    world.double.add_node("gpu-1", 64)
    _, pods = launch_job(world.service, "train", pods=3)
    create_pods(world, pods)
    ctl = world.controller()
    result = ctl.run_once()
    assert [w.key for w in result.plan.released] == ["jobs.batch/research/train"]
    for pod in pods:
        assert world.double.pod("research", pod["metadata"]["name"])["spec"]["schedulingGates"] == []
    assert world.store.gpus_by_user()["bob"] == 24
    assert [r["rule"] for r in world.store.audit_rows() if r["action"] == "schedule"] == ["queue-release"]
    assert world.store.verify().ok


def test_a_gang_waits_for_cluster_capacity_with_position_reason_annotation_and_event(world) -> None:
    world.double.add_node("gpu-1", 12)
    world.double.add_node("gpu-2", 12)
    world.double.add_node("cordoned", 64, unschedulable=True)
    _, first = launch_job(world.service, "first", pods=3)
    create_pods(world, first)
    ctl = world.controller()
    ctl.run_once()
    _, second = launch_job(world.service, "second", pods=1)
    create_pods(world, second)
    result = ctl.run_once()
    assert result.plan.released == ()
    [held] = result.plan.held
    assert held.position == 1 and "the cluster holds 24 of 24 GPUs" in held.reason
    pod = world.double.pod("research", "second-0")
    assert pod["spec"]["schedulingGates"] == [{"name": QUOTA_GATE}]
    assert pod["metadata"]["annotations"][QUEUE_ANNOTATION].startswith("position 1: waiting for GPUs")
    [event] = [e for e in world.double.events if e["reason"] == "GpuQueueWaiting"]
    assert "jobs.batch research/second waits in the GPU queue at position 1" in event["message"]
    ctl.run_once()  # nothing changed: no second Event
    assert len([e for e in world.double.events if e["reason"] == "GpuQueueWaiting"]) == 1
    # The first job's pods finish: their GPUs are free, and the second gang starts in the same pass.
    for p in first:
        world.double.set_phase("research", p["metadata"]["name"], "Succeeded")
    result = ctl.run_once()
    assert [w.key for w in result.plan.released] == ["jobs.batch/research/second"]
    assert world.store.gpus_by_user()["bob"] == 8
    assert world.double.pod("research", "second-0")["spec"]["schedulingGates"] == []
    metrics = generate_latest(ctl.registry).decode()
    assert "gpu_gateway_queue_length 0.0" in metrics and "gpu_gateway_queue_released_total 2.0" in metrics


def test_a_missed_delete_never_leaves_gpus_reserved(world) -> None:
    world.double.add_node("gpu-1", 64)
    pod = make_pod(gpus=8).named("research", "solo").obj()
    # reject mode for interns: admitted at once and charged
    pod = mutated(world.service, pod, user="ivy", groups=("gpu-interns", "team:vision"))
    assert validate(world.service, pod, user="ivy", groups=("gpu-interns", "team:vision"))["allowed"]
    create_pods(world, [pod], phase="Running")
    ctl = world.controller()
    ctl.run_once()
    assert world.store.gpus_by_user()["ivy"] == 8
    world.double.delete_pod("research", "solo", seen=False)
    world.double.compact()  # the watch resumes from a version the server no longer has: 410, list again
    world.clock.offset += FORGET_GRACE_S - 1
    ctl.run_once()  # a reservation younger than the grace stays: its pod may not be listed yet
    assert world.store.gpus_by_user()["ivy"] == 8
    world.clock.offset += 2
    ctl.run_once()
    assert world.store.gpus_by_user().get("ivy", 0) == 0
    assert any(r["rule"] == "reconcile-forget" and r["name"] == "solo" for r in world.store.audit_rows())
    assert any("watch=" in path and "resourceVersion=" in path for _, path in world.double.requests)


def test_a_running_pod_the_ledger_does_not_know_is_accounted(world) -> None:
    world.double.add_node("gpu-1", 64)
    rogue = make_pod(gpus=4).named("research", "rogue").owned_by("mallory", "vision").obj()
    create_pods(world, [rogue], phase="Running")
    world.controller().run_once()
    # recorded and charged, but to nobody: its annotation is not who owns it
    [row] = [r for r in world.store.reservations() if r.name == "rogue"]
    assert (row.owner, row.gpus, row.charged) == ("", 4, True)
    assert "mallory" not in world.store.gpus_by_user()
    assert any(r["rule"] == "reconcile-account" for r in world.store.audit_rows())


def test_a_gang_whose_pods_do_not_all_appear_is_dropped(world) -> None:
    world.double.add_node("gpu-1", 64)
    _, pods = launch_job(world.service, "stuck", pods=3)
    create_pods(world, pods[:1])
    ctl = world.controller()
    result = ctl.run_once()
    assert result.plan.released == () and "1 of 3 appeared" in result.plan.held[0].reason
    world.clock.offset = world.service.policies.policy.scheduling.gang_timeout_s + 5
    result = ctl.run_once()
    [(key, reason)] = result.dropped
    assert key == "jobs.batch/research/stuck" and "only 1 of its 3 GPU pods appeared" in reason
    assert world.store.queue_rows() == [] and world.store.verify().ok


def test_one_replica_leads_through_the_lease(world) -> None:
    world.double.add_node("gpu-1", 64)
    a, b = world.controller("replica-a"), world.controller("replica-b")
    assert a.run_once() is not None
    assert b.run_once() is None
    assert a.run_once() is not None  # renews
    world.clock.offset = 16  # a stops renewing; its lease expires
    assert b.run_once() is not None
    assert a.run_once() is None
    lease = json.loads(json.dumps(world.double.leases[("gpu-gateway", "gpu-gateway-controller")]))
    assert lease["spec"]["holderIdentity"] == "replica-b" and lease["spec"]["leaseTransitions"] == 1


def test_the_double_refuses_adding_a_gate_as_the_api_server_does(world) -> None:
    _, pods = launch_job(world.service, "train", pods=1)
    create_pods(world, pods)
    host, port = world.double.server.server_address[:2]
    cluster = Cluster(api_client(host=f"http://{host}:{port}"))
    with pytest.raises(ClusterError) as info:
        cluster.patch_pod("research", "train-0", [{"op": "add", "path": "/spec/schedulingGates/-",
                                                   "value": {"name": "other"}}])
    assert info.value.status == 422
    assert world.double.pod("research", "train-0")["spec"]["schedulingGates"] == [{"name": QUOTA_GATE}]


def test_gpu_gateway_controller_once_runs_a_pass_through_a_kubeconfig(world, tmp_path: Path) -> None:
    world.double.add_node("gpu-1", 64)
    _, pods = launch_job(world.service, "train", pods=2)
    create_pods(world, pods)
    host, port = world.double.server.server_address[:2]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": f"http://{host}:{port}"}}],
        "users": [{"name": "gateway", "user": {"token": "not-checked-by-the-double"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "gateway"}}],
    }))
    policy_dir = tmp_path / "policies"
    out = subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", "controller", "--state",
                          str(tmp_path / "state.db"), "--policy-dir", str(policy_dir), "--kubeconfig", str(kubeconfig),
                          "--once", "--interval", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "released 1, waiting 0, dropped 0" in out.stdout
    assert world.double.pod("research", "train-1")["spec"]["schedulingGates"] == []
    assert world.store.gpus_by_user()["bob"] == 16


def test_serve_with_the_controller_flag_releases_what_it_queued(world, tmp_path: Path) -> None:
    """One `serve --controller` process: /mutate gates, /validate queues, its controller releases."""
    world.double.add_node("gpu-1", 64)
    (tmp_path / "served").mkdir()
    served = start_server(tmp_path / "served", "--controller", "--kubeconfig",
                          str(world.double.write_kubeconfig(tmp_path / "kubeconfig")), tls=False,
                          policy_dir=tmp_path / "policies")
    try:
        with served.client() as client:
            def admit(obj: dict[str, Any], user: str, groups: tuple[str, ...]) -> dict[str, Any]:
                answer = client.post("/mutate", json=review_body(obj, user=user, groups=groups)).json()["response"]
                if "patch" in answer:
                    obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
                verdict = client.post("/validate", json=review_body(obj, user=user, groups=groups)).json()
                assert verdict["response"]["allowed"], verdict
                return obj

            job = admit(make_job(gpus=8, parallelism=2).named("research", "served").obj(), "bob", RESEARCHER)
            for pod in job_pods(job, 2):
                create_pods(world, [admit(pod, *JOB_CONTROLLER)])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(not world.double.pod("research", f"served-{i}")["spec"]["schedulingGates"] for i in range(2)):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"not released: {(tmp_path / 'served' / 'server.log').read_text()[-2000:]}")
            metrics = client.get("/metrics").text
            assert "gpu_gateway_queue_released_total 1.0" in metrics and "gpu_gateway_controller_leader 1.0" in metrics
    finally:
        assert stop_server(served) == 0


def test_a_workload_reservation_whose_object_never_came_to_exist_is_freed_and_audited(world) -> None:
    """Admitted and reserved, then refused by a later admission step (or the gateway crashed
    right after the commit): the Job never exists, so after the grace its GPUs are freed."""
    world.double.add_node("gpu-1", 64)
    intern = ("gpu-interns", "team:vision")
    for name in ("ghost", "real"):
        job = mutated(world.service, make_job(gpus=4).named("research", name).obj(), user="ivy", groups=intern)
        assert validate(world.service, job, user="ivy", groups=intern)["allowed"]
    world.double.workloads[("batch", "jobs", "research", "real")] = {"apiVersion": "batch/v1", "kind": "Job",
                                                                    "metadata": {"name": "real"}}
    ctl = world.controller()
    ctl.run_once()
    assert world.store.gpus_by_user()["ivy"] == 8  # within the grace: not looked up yet
    world.clock.offset += FORGET_GRACE_S + 1
    ctl.run_once()
    assert world.store.gpus_by_user()["ivy"] == 4
    forgotten = [r for r in world.store.audit_rows() if r["rule"] == "reconcile-forget"]
    assert [r["name"] for r in forgotten] == ["ghost"] and "does not exist in the cluster" in forgotten[0]["reason"]
    lookups = [path for _, path in world.double.requests if "/namespaces/research/jobs/" in path]
    assert len(lookups) == 2
    ctl.run_once()  # looked up again only after orphan_recheck_s
    assert len([path for _, path in world.double.requests if "/namespaces/research/jobs/" in path]) == 2


def test_a_reconciler_runs_on_a_view_of_the_cluster_without_the_loop(world) -> None:
    """Each reconciler reads only the pass's shared view: the ledger rebuild, given a view with a
    running GPU pod nobody accounted for, charges it to nobody, without asking the API server."""
    policy = world.service.policies.policy
    pod = read_pod(make_pod(gpus=4).named("research", "rogue").obj() | {"status": {"phase": "Running"}}, policy.gpu)
    assert pod is not None
    registry = CollectorRegistry()
    rebuild = LedgerRebuild(world.store, Actor("controller"), LedgerMetrics(registry), grace_s=FORGET_GRACE_S)
    [repair] = rebuild.reconcile(ClusterView((pod,), capacity=64, policy=policy, now=time.time()))
    assert (repair.kind, repair.key) == ("account", "pods/research/rogue")
    assert registry.get_sample_value("gpu_gateway_ledger_repairs_total", {"kind": "account"}) == 1
    assert [(r.name, r.owner, r.gpus, r.charged) for r in world.store.reservations()] == [("rogue", "", 4, True)]
    assert world.double.requests == []


def gated_double(pods: int, **kwargs: Any) -> tuple[FakeApiServer, str]:
    double = FakeApiServer(**kwargs)
    url = double.start()
    for i in range(pods):
        double.add_pod({"metadata": {"name": f"p-{i}", "namespace": "research"},
                        "spec": {"containers": [{"name": "c", "image": "x"}],
                                 "schedulingGates": [{"name": QUOTA_GATE}]}})
    return double, url


@pytest.mark.parametrize("keep_alive", [True, False])
def test_patch_pods_answers_each_outcome_in_order_with_the_clients_credentials(tmp_path: Path,
                                                                              keep_alive: bool) -> None:
    """Many PATCHes in flight on kept connections (or one per request where the server closes
    them): each one's outcome in order, failures kept apart, the kubeconfig's token on each."""
    double, url = gated_double(40, keep_alive=keep_alive)
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": url}}],
            "users": [{"name": "gateway", "user": {"token": "t-1"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "gateway"}}],
        }))
        cluster = Cluster(api_client(str(kubeconfig)))
        remove = [{"op": "test", "path": "/spec/schedulingGates/0/name", "value": QUOTA_GATE},
                  {"op": "remove", "path": "/spec/schedulingGates/0"}]
        patches: list[tuple[str, str, Any]] = [("research", f"p-{i}", remove) for i in range(40)]
        patches[5] = ("research", "gone", remove)
        patches[9] = ("research", "p-9", [{**remove[0], "value": "another-gate"}, remove[1]])
        patches[12] = ("research", "p-12", {"metadata": {"annotations": {"note": "merge patch"}}})
        outcomes = cluster.patch_pods(patches, in_flight=8)
        assert [(i, o.status) for i, o in enumerate(outcomes) if o is not None] == [(5, 404), (9, 422)]
        assert "patch pod research/gone: 404" in str(outcomes[5])
        still_gated = sorted(name for (_, name), pod in double.pods.items() if pod["spec"]["schedulingGates"])
        assert still_gated == ["p-12", "p-5", "p-9"]
        assert double.pod("research", "p-12")["metadata"]["annotations"] == {"note": "merge patch"}
        assert double.authorizations == ["Bearer t-1"] * 40
        assert double.connections == (8 if keep_alive else 40)
    finally:
        double.stop()


def test_patch_pods_without_an_api_server_answers_a_failure_for_each(tmp_path: Path) -> None:
    double, url = gated_double(0)
    double.stop()
    outcomes = Cluster(api_client(host=url)).patch_pods([("research", f"p-{i}", [{"op": "remove", "path": "/x"}])
                                                          for i in range(3)])
    assert [(o.status, f"patch pod research/p-{i}:" in str(o)) for i, o in enumerate(outcomes) if o] \
        == [(0, True)] * 3


# ================================================================== workloads that predate the gateway


def _legacy_world(world: Any) -> None:
    """What ran before the gateway was installed: a GPU Deployment parked at 0 replicas, with the
    ReplicaSet its controller made; a CPU Deployment and a CPU Job; a suspended GPU PyTorchJob
    (a CRD). No RayCluster CRD is installed: listing that kind answers 404."""
    legacy = make_deployment(gpus=8, replicas=0).named("research", "legacy").obj()
    legacy["metadata"]["uid"] = "uid-legacy"
    world.double.add_workload("apps", "deployments", legacy)
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "legacy-5d8f", "namespace": "research", "uid": "uid-legacy-rs",
                       "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy",
                                            "uid": "uid-legacy", "controller": True}]},
          "spec": {"replicas": 0, "selector": legacy["spec"]["selector"], "template": legacy["spec"]["template"]}}
    world.double.add_workload("apps", "replicasets", rs)
    world.double.add_workload("apps", "deployments", make_deployment(gpus=0, replicas=3).named("research", "web").obj())
    world.double.add_workload("batch", "jobs", make_job(gpus=0).named("research", "etl").obj())
    llm = make_pytorchjob(workers=2, gpus=8).named("research", "llm").obj()
    llm["spec"]["runPolicy"] = {"suspend": True}
    world.double.add_workload("kubeflow.org", "pytorchjobs", llm)


def test_the_controller_records_gpu_workloads_that_predate_the_gateway_as_unowned(world) -> None:
    _legacy_world(world)
    ctl = world.controller()
    ctl.roots.page_size = 1  # every kind is listed page by page
    ctl.run_once()
    recorded = {f"{r.resource}/{r.name}": (r.owner, r.gpus, r.charged) for r in world.store.reservations()}
    # What can run now is charged: nothing while parked or suspended; both are known from now on,
    # and the Deployment's ReplicaSet under it, held to its charge.
    assert recorded == {"deployments.apps/legacy": ("", 0, True), "pytorchjobs.kubeflow.org/llm": ("", 0, True),
                        "replicasets.apps/legacy-5d8f": ("", 0, False)}
    rs = world.store._read(lambda ledger: ledger.target(("replicasets.apps", "research", "legacy-5d8f")))
    assert rs is not None and rs.root_uid == "uid-legacy"
    audited = [r for r in world.store.audit_rows() if r["action"] == "reconcile"]
    assert sorted((r["kind"], r["name"], r["rule"], r["owner"], r["object_uid"]) for r in audited) == [
        ("deployments.apps", "legacy", "reconcile-root", "", "uid-legacy"),
        ("pytorchjobs.kubeflow.org", "llm", "reconcile-root", "", world.double.workloads[
            ("kubeflow.org", "pytorchjobs", "research", "llm")]["metadata"]["uid"]),
        ("replicasets.apps", "legacy-5d8f", "reconcile-root", "", "uid-legacy-rs")]
    assert 'gpu_gateway_ledger_repairs_total{kind="root"} 3.0' in generate_latest(ctl.registry).decode()
    assert ("GET", "/apis/apps/v1/deployments?limit=1&continue=1") in world.double.requests
    assert any(path.startswith("/apis/ray.io/v1/rayclusters") for _, path in world.double.requests), \
        "a kind without its CRD is asked for, answers 404, and the pass goes on"
    # A later listing (each full resync) records nothing twice.
    world.clock.offset += ctl.settings.resync_s + 1
    ctl.run_once()
    assert len([r for r in world.store.audit_rows() if r["action"] == "reconcile"]) == 3
    assert world.store.verify().ok


def test_after_the_listing_a_legacy_gpu_root_is_decided_as_unowned_until_an_admin_assigns_it(world) -> None:
    _legacy_world(world)
    service = AdmissionService(world.service.policies, world.store, metrics=Metrics(), await_listing=True)
    cluster = SimCluster(service)
    for (_, resource, namespace, name), obj in world.double.workloads.items():
        if resource == "deployments":
            cluster.objects[("Deployment", namespace, name)] = obj
    # Before the controller's listing, the gateway cannot tell a CPU Deployment from a legacy GPU one.
    assert "has not yet listed" in cluster.scale("Deployment", "web", 10, HPA, SYSTEM).message
    world.controller().run_once()
    assert cluster.scale("Deployment", "web", 10, HPA, SYSTEM).allowed
    assert not cluster.scale("Deployment", "legacy", 100, HPA, SYSTEM).allowed, "800 GPUs for nobody"
    # An administrator assigns it an owner (reassign): from then on it is bob's, within bob's caps.
    owned = cluster.get("Deployment", "legacy")
    owned["metadata"].setdefault("annotations", {}).update({OWNER_ANNOTATION: "bob", TEAM_ANNOTATION: "vision"})
    assert cluster.update(owned, "root", ("gpu-admins",)).allowed
    [record] = [r for r in world.store.reservations() if r.name == "legacy"]
    assert (record.owner, record.team) == ("bob", "vision")
    # The request does not carry bob's groups: until bob acts on it himself, it is held to the
    # role with the lowest caps (intern: 8 GPUs per workload).
    denied = cluster.scale("Deployment", "legacy", 2, HPA, SYSTEM)
    assert not denied.allowed and "role intern" in denied.message
    mine = cluster.get("Deployment", "legacy")
    mine["metadata"].setdefault("labels", {})["app"] = "legacy"
    assert cluster.update(mine, "bob", RESEARCHER).allowed  # his own change records his role
    assert cluster.scale("Deployment", "legacy", 2, HPA, SYSTEM).allowed
    assert world.store.gpus_by_user()["bob"] == 24, "2 replicas and a rolling update's surge pod, 8 GPUs each"
