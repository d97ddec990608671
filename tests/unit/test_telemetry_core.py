"""The pure telemetry core: reading reports, attributing GPU time, and deciding alerts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.telemetry.alerts import COLLAPSE, GPU_ERRORS, IDLE, ROGUE, PodUtil, collapse, evaluate_gpu
from gateway.telemetry.attribution import Owner, attribute
from gateway.telemetry.report import TelemetryError, parse_report
from gateway.telemetry.samples import GpuProcess, GpuSample, PodRef
from gateway.telemetry.settings import TelemetrySettings, parse_telemetry_settings
from gateway.telemetry.workload_names import name_prefixes, workload_of

POD = PodRef("research", "llm-70b-worker-0")
BOB = Owner("bob", "vision", "pytorchjobs.kubeflow.org research/llm-70b")
SETTINGS = TelemetrySettings(idle_after_s=60)


def sample(ts: float = 100.0, *, util: float | None = 90.0, procs: tuple[GpuProcess, ...] = (),
           allocated: PodRef | None = POD, **kw: Any) -> GpuSample:
    return GpuSample("node-a", "GPU-1", ts, 10.0, utilization=util, processes=procs, allocated=allocated, **kw)


def report(**fields: Any) -> dict[str, Any]:
    s = {"uuid": "GPU-1", "ts": 100.0, "interval_s": 10, "utilization": 50, **fields}
    return {"node": "node-a", "samples": [s]}


# ------------------------------------------------------------------ reading reports


def test_a_report_reads_into_samples_with_pods() -> None:
    [s] = parse_report(report(processes=[{"pid": 7, "used_memory_bytes": 1024, "pod_uid": "u",
                                          "pod": {"namespace": "research", "name": "p"}}],
                              allocated={"namespace": "research", "name": "p"}, xid_errors=[79]))
    assert s.node == "node-a" and s.utilization == 50.0 and s.xid_errors == (79,)
    assert s.processes == (GpuProcess(7, 1024, "u", "", PodRef("research", "p")),)
    assert s.allocated == PodRef("research", "p")


@pytest.mark.parametrize(("fields", "message"), [
    ({"utilization": 150}, "utilization must be between 0 and 100"),
    ({"utilization": "high"}, "utilization must be a number"),
    ({"uuid": ""}, "uuid must be a non-empty string"),
    ({"ts": float("nan")}, "ts must be a number"),
    ({"interval_s": 3600}, "interval_s must be between 0 and 300"),
    ({"processes": [{"pid": -1}]}, "processes[0].pid must be between"),
    ({"processes": "many"}, "processes must be a list"),
    ({"allocated": {"namespace": "x"}}, "allocated.name must be a non-empty string"),
    ({"memory_used_bytes": 1.5}, "memory_used_bytes must be a whole number"),
])
def test_an_unreadable_report_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TelemetryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_report(report(**fields))


@pytest.mark.parametrize("body", [None, [], [1], {"node": "", "samples": []}, {"node": "n"}, "text"])
def test_a_body_that_is_not_a_report_is_refused(body: Any) -> None:
    if body == []:
        assert parse_report(body) == []
        return
    with pytest.raises(TelemetryError):
        parse_report(body)


# ------------------------------------------------------------------ settings


def test_limits_yaml_telemetry_thresholds_are_validated() -> None:
    assert parse_telemetry_settings({"idle_after_s": 600, "evict_rogue_pods": True}) == TelemetrySettings(
        idle_after_s=600, evict_rogue_pods=True)
    for bad, message in [({"idle_after_s": -1}, "idle_after_s"), ({"collapse_min_pods": 2.5}, "collapse_min_pods"),
                         ({"evict_rogue_pods": "yes"}, "evict_rogue_pods"), ({"idle": 1}, "unknown setting"),
                         ({"collapse_to_pct": 60}, "collapse_to_pct must be below")]:
        with pytest.raises(ValueError, match=message):
            parse_telemetry_settings(bad)


# ------------------------------------------------------------------ attribution


@given(n=st.integers(min_value=1, max_value=8))
def test_a_shared_gpu_is_split_equally_between_the_pods_running_on_it(n: int) -> None:
    procs = tuple(GpuProcess(i, 1, pod=PodRef("ns", f"p{i}")) for i in range(n))
    shares = attribute(sample(procs=procs, allocated=None), {})
    assert len(shares) == n and math.isclose(sum(s.fraction for s in shares), 1.0)


def test_the_allocated_pod_holds_the_gpu_whoever_runs_on_it() -> None:
    procs = (GpuProcess(1, 1, pod=PodRef("ns", "other")),)
    [share] = attribute(sample(procs=procs), {POD: BOB})
    assert share.pod == POD and share.owner == BOB and share.fraction == 1.0


def test_a_pod_belongs_to_the_admitted_workload_whose_name_prefixes_it_longest() -> None:
    ledger = [("jobs.batch", "research", "llm"), ("pytorchjobs.kubeflow.org", "research", "llm-70b"),
              ("pytorchjobs.kubeflow.org", "other", "llm-70b-worker")]
    assert workload_of(POD, ledger) == "pytorchjobs.kubeflow.org research/llm-70b"
    assert workload_of(PodRef("research", "solo"), ledger) is None


# ------------------------------------------------------------------ alerts


def test_a_process_in_a_pod_nobody_admitted_is_rogue_once() -> None:
    miner = GpuProcess(666, 2**30, "uid-1", "c" * 64, PodRef("research", "miner"))
    state, alerts = evaluate_gpu(None, sample(procs=(miner,)), {POD: BOB}, SETTINGS)
    assert [a.kind for a in alerts] == [ROGUE]
    assert "pod research/miner, which the gateway never admitted" in alerts[0].reason
    assert not alerts[0].evict
    _, again = evaluate_gpu(state, sample(ts=110, procs=(miner,)), {POD: BOB}, SETTINGS)
    assert again == []


def test_host_processes_and_bare_containers_are_rogue() -> None:
    procs = (GpuProcess(1, 0), GpuProcess(2, 0, container_id="d" * 64), GpuProcess(3, 0, pod_uid="u"))
    _, alerts = evaluate_gpu(None, sample(procs=procs), {}, SETTINGS)
    reasons = " | ".join(a.reason for a in alerts)
    assert [a.pid for a in alerts] == [1, 2, 3]
    assert "host process" in reasons and "outside Kubernetes" in reasons and "could not resolve" in reasons


def test_processes_of_admitted_pods_and_exempt_namespaces_are_not_rogue() -> None:
    procs = (GpuProcess(1, 0, pod=POD), GpuProcess(2, 0, pod=PodRef("kube-system", "dcgm")))
    _, alerts = evaluate_gpu(None, sample(procs=procs), {POD: BOB}, SETTINGS, frozenset({"kube-system"}))
    assert alerts == []


def test_eviction_is_asked_only_when_the_policy_says_so_and_there_is_a_pod() -> None:
    procs = (GpuProcess(1, 0, pod=PodRef("research", "miner")), GpuProcess(2, 0))
    _, alerts = evaluate_gpu(None, sample(procs=procs), {}, TelemetrySettings(evict_rogue_pods=True))
    assert [(a.pid, a.evict) for a in alerts] == [(1, True), (2, False)]


def test_an_allocated_gpu_idle_past_the_threshold_alerts_once_per_idle_stretch() -> None:
    state, kinds = None, []
    for t, util in enumerate([90, 3, 2, 1, 0, 0, 0, 0, 80, 1, 1, 1, 1, 1, 1, 1]):
        state, alerts = evaluate_gpu(state, sample(ts=100 + 10 * t, util=util), {POD: BOB}, SETTINGS)
        kinds += [(t, a.kind) for a in alerts]
    assert kinds == [(7, IDLE), (15, IDLE)]  # idle from t=1: 60 s later; again after the busy sample at t=8


def test_an_unallocated_idle_gpu_is_not_an_alert() -> None:
    state = None
    for t in range(20):
        state, alerts = evaluate_gpu(state, sample(ts=100 + 10 * t, util=0, allocated=None), {}, SETTINGS)
        assert alerts == []


def test_xid_events_new_uncorrectable_ecc_errors_and_a_lost_gpu_alert() -> None:
    state, alerts = evaluate_gpu(None, sample(ecc_uncorrected=2, xid_errors=(79, 48)), {POD: BOB}, SETTINGS)
    assert [a.kind for a in alerts] == [GPU_ERRORS] and "XID error(s) 79, 48" in alerts[0].reason
    state, alerts = evaluate_gpu(state, sample(ts=110, ecc_uncorrected=2), {POD: BOB}, SETTINGS)
    assert alerts == []
    state, alerts = evaluate_gpu(state, sample(ts=120, ecc_uncorrected=3), {POD: BOB}, SETTINGS)
    assert [a.kind for a in alerts] == [GPU_ERRORS] and "1 new uncorrectable ECC" in alerts[0].reason
    state, alerts = evaluate_gpu(state, sample(ts=130, util=None, error="GPU is lost"), {}, SETTINGS)
    assert "GPU is lost" in alerts[0].reason
    _, alerts = evaluate_gpu(state, sample(ts=140, util=None, error="GPU is lost"), {}, SETTINGS)
    assert alerts == []


def test_a_late_sample_changes_nothing() -> None:
    state, _ = evaluate_gpu(None, sample(ts=200), {}, SETTINGS)
    later, alerts = evaluate_gpu(state, sample(ts=150, xid_errors=(79,)), {}, SETTINGS)
    assert later is state and alerts == []


def _pods(pairs: Sequence[tuple[float | None, float]], ts: float = 100.0) -> list[PodUtil]:
    return [PodUtil(PodRef("ns", f"p{i}"), prev, cur, ts) for i, (prev, cur) in enumerate(pairs)]


def test_a_collapse_needs_most_pods_of_a_large_workload_falling_at_once() -> None:
    settings = TelemetrySettings(collapse_min_pods=4, collapse_fraction=0.75)
    assert collapse(_pods([(95, 2)] * 3 + [(95, 90)]), settings, 100)[0]
    assert not collapse(_pods([(95, 2)] * 2 + [(95, 90)] * 2), settings, 100)[0]
    assert not collapse(_pods([(95, 2)] * 3), settings, 100)[0]  # too small to judge
    assert not collapse(_pods([(30, 2)] * 4), settings, 100)[0]  # was never busy
    assert not collapse(_pods([(95, 2)] * 4, ts=0), settings, 1000)[0]  # stale reports


@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 100)), st.floats(0, 100)), max_size=30))
def test_a_collapse_and_a_recovery_never_hold_together(pairs: list[tuple[float | None, float]]) -> None:
    collapsed, recovered, fell, counted = collapse(_pods(pairs), SETTINGS, 100)
    assert fell <= counted == len(pairs)
    assert not (collapsed and recovered)
    assert COLLAPSE == "utilization-collapse"


_names = st.lists(st.sampled_from(["llm", "70b", "worker", "0", "a", "b"]), min_size=1, max_size=5).map("-".join)


@given(pod=_names, workloads=st.lists(st.tuples(st.sampled_from(["jobs.batch", "pytorchjobs.kubeflow.org"]),
                                                st.sampled_from(["research", "other"]), _names), max_size=12))
def test_looking_workloads_up_by_name_prefix_finds_what_a_full_scan_finds(
        pod: str, workloads: list[tuple[str, str, str]]) -> None:
    ref = PodRef("research", pod)
    prefixes = set(name_prefixes(pod))
    candidates = [w for w in workloads if w[1] == "research" and w[2] in prefixes]
    assert workload_of(ref, candidates) == workload_of(ref, workloads)
