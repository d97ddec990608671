"""The controller's pure core: reading pods, repairing the ledger from them, choosing pods to ungate."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.workloads import GpuMatcher
from gateway.scheduling.reconcile import (
    FORGET_GRACE_S,
    Held,
    gate_removal_patch,
    gates_to_remove,
    gpu_capacity,
    orphan_candidates,
    plan_reconcile,
    read_pod,
)

GPU = GpuMatcher()
KEY = "jobs.batch/research/train"


def pod(name: str, *, gpus: int = 8, phase: str = "Running", owner: str = "bob", workload: str = "",
        gated: bool = False, namespace: str = "research") -> dict[str, Any]:
    ann = {"gpu-gateway.io/owner": owner, "gpu-gateway.io/team": "vision"}
    if workload:
        ann["gpu-gateway.io/workload"] = workload
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    if gated:
        spec["schedulingGates"] = [{"name": "example.com/other"}, {"name": "gpu-gateway.io/quota"}]
    return {"metadata": {"name": name, "namespace": namespace, "annotations": ann}, "spec": spec,
            "status": {"phase": phase}}


def views(*pods: dict[str, Any]) -> list[Any]:
    out = [read_pod(p, GPU) for p in pods]
    assert all(v is not None for v in out)
    return out


def test_a_pod_is_read_with_its_gpus_gate_and_workload() -> None:
    [v] = views(pod("a", gpus=4, workload=KEY, gated=True))
    assert (v.gpus, v.gate_index, v.workload, v.owner, v.key) == (4, 1, KEY, "bob", "pods/research/a")
    assert gate_removal_patch(v) == [{"op": "test", "path": "/spec/schedulingGates/1/name",
                                      "value": "gpu-gateway.io/quota"},
                                     {"op": "remove", "path": "/spec/schedulingGates/1"}]
    assert read_pod({"metadata": "nonsense"}, GPU) is None


def test_missed_deletes_are_forgotten_and_finished_pods_uncharged() -> None:
    ledger = [Held("pods/research/gone", "bob", "vision", 8, True),
              Held("pods/research/done", "bob", "vision", 8, True),
              Held("pods/research/running", "bob", "vision", 8, True)]
    repairs = plan_reconcile(views(pod("done", phase="Succeeded"), pod("running")), ledger)
    assert [(r.key, r.kind) for r in repairs] == [("pods/research/gone", "forget"), ("pods/research/done", "uncharge")]


def test_a_pod_reservation_younger_than_the_grace_is_not_forgotten() -> None:
    ledger = [Held("pods/research/new", "bob", "vision", 8, True, created_at=1000.0)]
    assert plan_reconcile([], ledger, now=1000.0 + FORGET_GRACE_S - 0.5) == []
    [repair] = plan_reconcile([], ledger, now=1000.0 + FORGET_GRACE_S)
    assert (repair.key, repair.kind) == ("pods/research/new", "forget")


def test_a_workload_without_pods_is_looked_up_after_the_grace_and_forgotten_only_when_absent() -> None:
    ledger = [Held(KEY, "bob", "vision", 16, True, created_at=1000.0),
              Held("jobs.batch/research/queued", "bob", "vision", 8, False, created_at=0.0)]
    waiting = frozenset({"jobs.batch/research/queued"})
    assert orphan_candidates([], ledger, waiting=waiting, now=1000.0 + FORGET_GRACE_S - 1) == []
    assert orphan_candidates([], ledger, waiting=waiting, now=1000.0 + FORGET_GRACE_S) == [KEY]
    assert orphan_candidates(views(pod("t-0", workload=KEY)), ledger, now=5000.0) == [
        "jobs.batch/research/queued"]
    assert plan_reconcile([], ledger, waiting=waiting, now=5000.0) == []  # nothing said it is absent
    [repair] = plan_reconcile([], ledger, waiting=waiting, now=5000.0, absent=frozenset({KEY}))
    assert (repair.key, repair.kind) == (KEY, "forget") and "does not exist" in repair.reason


def test_a_workload_whose_pods_all_finished_is_uncharged_not_before() -> None:
    ledger = [Held(KEY, "bob", "vision", 16, True)]
    half = views(pod("t-0", workload=KEY, phase="Succeeded"), pod("t-1", workload=KEY))
    assert plan_reconcile(half, ledger) == []
    done = views(pod("t-0", workload=KEY, phase="Succeeded"), pod("t-1", workload=KEY, phase="Failed"))
    [repair] = plan_reconcile(done, ledger)
    assert (repair.key, repair.kind, repair.reason) == (KEY, "uncharge", "all 2 of its pods have finished")


def test_only_running_unaccounted_gpu_pods_are_charged_and_to_nobody_whatever_their_annotations_say() -> None:
    seen = views(pod("rogue", owner="mallory"), pod("cpu", gpus=0), pod("gated", workload=KEY, gated=True),
                 pod("member", workload=KEY), pod("queued", workload="jobs.batch/research/q"),
                 pod("finished", phase="Failed"))
    repairs = plan_reconcile(seen, [Held(KEY, "bob", "vision", 8, True)],
                             waiting=frozenset({"jobs.batch/research/q"}))
    assert [(r.key, r.kind, r.owner, r.gpus) for r in repairs] == [("pods/research/rogue", "account", "", 8)]
    assert "its annotation names mallory" in repairs[0].reason


def test_a_pod_cannot_ride_on_another_workloads_release() -> None:
    seen = views(pod("mine", workload=KEY, gated=True), pod("thief", workload=KEY, gated=True, owner="eve"),
                 pod("elsewhere", workload=KEY, gated=True, namespace="other"),
                 pod("waiting", workload="jobs.batch/research/q", gated=True))
    assert [p.name for p in gates_to_remove(seen, {KEY: "bob"})] == ["mine"]


def test_capacity_counts_gpu_allocatable_on_schedulable_nodes() -> None:
    nodes = [{"status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "96"}}},
             {"status": {"allocatable": {"amd.com/gpu": "4"}}},
             {"spec": {"unschedulable": True}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}},
             {"status": {"allocatable": {"nvidia.com/gpu": "bogus"}}}, {}]
    assert gpu_capacity(nodes, GPU) == 12


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
                          st.booleans(), st.booleans()), max_size=30),
       st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=30))
def test_repairs_make_the_ledger_agree_with_the_pods(pods, ledger) -> None:
    """After the repairs, every charged pod record is of a live unfinished pod, and every live
    ungated GPU pod is recorded; nothing is repaired twice."""
    seen = {f"p{i}": (phase, gated, gpu) for i, phase, gated, gpu in pods}
    vs = views(*(pod(n, phase=ph, gated=g, gpus=8 if gpu else 0) for n, (ph, g, gpu) in seen.items()))
    held = {f"pods/research/p{i}": Held(f"pods/research/p{i}", "bob", "", 8, charged) for i, charged in ledger}
    repairs = plan_reconcile(vs, held.values())
    assert len({r.key for r in repairs}) == len(repairs)
    after = dict(held)
    for r in repairs:
        if r.kind == "forget":
            del after[r.key]
        elif r.kind == "uncharge":
            after[r.key] = Held(r.key, "bob", "", 8, False)
        else:
            after[r.key] = Held(r.key, r.owner, r.team, r.gpus, True)
    for key, h in after.items():
        name = key.rsplit("/", 1)[1]
        assert name in seen
        if h.charged:
            assert seen[name][0] not in ("Succeeded", "Failed")
    for name, (phase, gated, gpu) in seen.items():
        if gpu and not gated and phase not in ("Succeeded", "Failed"):
            assert f"pods/research/{name}" in after


def test_a_pod_deleted_at_once_keeps_its_record_until_its_grace_period_is_over():
    """A force delete leaves the kubelet to stop the containers: the record (`hold_until`) stays
    while they may run, however old it is, and goes once that time is past."""
    ghost = Held("pods/research/p", "bob", "vision", 8, True, created_at=0.0, hold_until=1_000.0)
    assert plan_reconcile([], [ghost], now=999.0) == []
    [repair] = plan_reconcile([], [ghost], now=1_000.0)
    assert repair.kind == "forget" and "grace period" in repair.reason
