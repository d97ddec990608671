"""Scheduler-shim figures, in one run (`python3 -m benchmarks --scheduler`, or `python3 -m benchmarks.scheduler`):

1. deciding and releasing one 4,096-pod gang: the queue pass in the store (pure core +
   one transaction), then a whole controller pass over loopback HTTP against the API server
   test double (tests/k8s_api_double.py): list, decide, and 4,096 PATCHes removing the gate;
2. rebuilding the ledger from 100,000 pods: list them (paged, raw JSON), read them, compare
   with 100,000 ledger rows and repair (finished, missed DELETEs, unaccounted pods) in one
   transaction;
3. admission latency (`AdmissionService.validate`, launch + delete pairs) on SQLite and on
   PostgreSQL (a server started on loopback, as the tests do), same policy, same requests.

Figures are wall-clock on this machine, printed and returned as a dict.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _tests_path() -> None:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


def _policies(target: Path, **extra: Any) -> Path:
    import yaml

    shutil.copytree(ROOT / "policies", target)
    path = target / "limits.yaml"
    limits = yaml.safe_load(path.read_text())
    limits["scheduling"].update({"roles": {"lead": "queue"}, **extra})
    path.write_text(yaml.safe_dump(limits))
    return target


def _pod(name: str, namespace: str, *, gpus: int, owner: str, workload: str = "", gated: bool = False,
         phase: str = "Running") -> dict[str, Any]:
    ann = {"gpu-gateway.io/owner": owner, "gpu-gateway.io/team": "vision"}
    if workload:
        ann["gpu-gateway.io/workload"] = workload
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x",
                                            "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    if gated:
        spec["schedulingGates"] = [{"name": "gpu-gateway.io/quota"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                            "annotations": ann}, "spec": spec,
            "status": {"phase": phase}}


def gang(workdir: Path, pods: int = 4096) -> dict[str, Any]:
    """Decide and release one gang of `pods` pods (1 GPU each) admitted in queue mode."""
    _tests_path()
    from k8s_api_double import FakeApiServer

    from gateway.admission.ports import Actor
    from gateway.kube import Cluster, api_client
    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder
    from gateway.scheduling.controller.loop import Controller, ControllerSettings
    from gateway.scheduling.ports import limits_from
    from gateway.service import AdmissionService
    from gateway.store.sqlite import SQLiteStore

    policies = PolicyHolder(_policies(workdir / "gang-policies"))
    out: dict[str, Any] = {"pods": pods}
    for phase in ("decide", "pass"):
        store = SQLiteStore(workdir / f"gang-{phase}.db")
        service = AdmissionService(policies, store, metrics=Metrics())
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "big", "namespace": "research"},
               "spec": {"parallelism": pods, "template": {"spec": {"restartPolicy": "Never", "containers": [
                   {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}
        from builders_queue import review_body

        answer = service.validate(review_body(job, user="lena", groups=("gpu-leads", "team:vision")))
        assert answer["response"]["allowed"], answer
        key = "jobs.batch/research/big"
        if phase == "decide":
            started = time.perf_counter()
            result = store.run_queue(limits_from(policies.policy, 100_000), now=time.time(),
                                     actor=Actor("bench"), pods_seen={key: pods})
            out["decide_s"] = time.perf_counter() - started
            assert len(result.plan.released) == 1
        else:
            double = FakeApiServer()
            url = double.start()
            double.add_node("gpu", pods)
            for i in range(pods):
                double.add_pod(_pod(f"big-{i}", "research", gpus=1, owner="lena", workload=key, gated=True),
                               phase="Pending")
            ctl = Controller(Cluster(api_client(host=url)), store, policies, ControllerSettings(interval_s=0))
            started = time.perf_counter()
            ctl.lease.acquire(time.time())
            result = ctl.sync(wait_s=0)
            out["controller_pass_s"] = time.perf_counter() - started
            assert len(result.plan.released) == 1
            assert all(not p["spec"]["schedulingGates"] for p in double.pods.values())
            double.stop()
        store.close()
    return out


def rebuild(workdir: Path, pods: int = 100_000) -> dict[str, Any]:
    """Rebuild the ledger from `pods` pods: list, read, compare with the ledger, repair."""
    _tests_path()
    from k8s_api_double import FakeApiServer

    from gateway.admission.ports import Actor
    from gateway.kube import Cluster, api_client
    from gateway.policy_bundle import PolicyHolder
    from gateway.scheduling.controller.loop import Controller, ControllerSettings
    from gateway.store.sqlite import SQLiteStore

    store = SQLiteStore(workdir / "rebuild.db")
    policies = PolicyHolder(ROOT / "policies")
    double = FakeApiServer()
    url = double.start()
    rows = []
    for i in range(pods):
        name, ns = f"p-{i}", f"ns-{i % 100}"
        phase = "Succeeded" if i % 10 == 0 else "Running"
        if i % 100 != 1:  # 1 in 100: a running pod the ledger never saw
            rows.append(("pods", ns, name, f"user-{i % 500}", f"team-{i % 50}", "researcher", 8, 1, "{}", 0.0, ""))
        if i % 100 != 2:  # 1 in 100: the ledger holds a pod whose DELETE was missed
            double.pods[(ns, name)] = _pod(name, ns, gpus=8, owner=f"user-{i % 500}", phase=phase)
    double.rv += 1

    def seed(ledger: Any) -> None:
        for row in rows:
            ledger.db.run("INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, "
                          "shape, created_at, request_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        ledger.rebuild_usage()
    store._write(seed)
    ctl = Controller(Cluster(api_client(host=url)), store, policies, ControllerSettings(interval_s=0))
    out: dict[str, Any] = {"pods": len(double.pods), "ledger_rows": len(rows)}
    started = time.perf_counter()
    ctl.pods.relist()  # list + read (the controller's own path)
    out["list_and_read_s"] = time.perf_counter() - started
    views = ctl.pods.views()
    started = time.perf_counter()
    repairs = store.reconcile(views, now=time.time(),
                              actor=Actor("bench"))
    out["reconcile_s"] = time.perf_counter() - started
    out["repairs"] = len(repairs)
    out["total_s"] = out["list_and_read_s"] + out["reconcile_s"]
    double.stop()
    store.close()
    return out


def admission(workdir: Path, pairs: int = 1000) -> dict[str, Any]:
    """validate() latency for launch + delete pairs on SQLite and on PostgreSQL."""
    _tests_path()
    from builders_queue import review_body

    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder
    from gateway.service import AdmissionService
    from gateway.store.sqlite import SQLiteStore

    stores: list[tuple[str, Any]] = [("sqlite", SQLiteStore(workdir / "latency.db"))]
    server = root = None
    try:
        from postgres_server import _start

        from gateway.store.postgres import PostgresStore

        server, root = _start()
        stores.append(("postgresql", PostgresStore(server.new_database())))
    except BaseException as exc:  # pytest.skip without the server binaries
        print(f"  PostgreSQL unavailable: {exc}")
    out: dict[str, Any] = {"pairs": pairs}
    policies = PolicyHolder(ROOT / "policies")
    researcher = ("gpu-researchers", "team:vision")
    try:
        for label, store in stores:
            service = AdmissionService(policies, store, metrics=Metrics())
            timings: list[float] = []
            for i in range(pairs):
                job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"j{i}", "namespace": "research"},
                       "spec": {"parallelism": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
                           {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}}
                for body in (review_body(job, user="bob", groups=researcher),
                             review_body(None, old=job, user="bob", groups=researcher, operation="DELETE")):
                    started = time.perf_counter()
                    answer = service.validate(body)
                    timings.append(time.perf_counter() - started)
                    assert answer["response"]["allowed"], answer
            timings.sort()
            out[label] = {"mean_ms": statistics.fmean(timings) * 1e3, "p50_ms": timings[len(timings) // 2] * 1e3,
                          "p99_ms": timings[int(len(timings) * 0.99)] * 1e3}
            store.close()
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(str(root), ignore_errors=True)
    return out


def run(*, quick: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="gpu-gateway-sched-bench-"))
    try:
        results: dict[str, Any] = {}
        print("scheduler: one 4,096-pod gang ...", flush=True)
        results["gang"] = gang(workdir, pods=512 if quick else 4096)
        g = results["gang"]
        print(f"  decide + release in the store: {g['decide_s'] * 1e3:.1f} ms; whole controller pass "
              f"(list, decide, {g['pods']} PATCHes over loopback HTTP): {g['controller_pass_s']:.2f} s")
        print("scheduler: ledger rebuild from 100,000 pods ...", flush=True)
        results["rebuild"] = rebuild(workdir, pods=10_000 if quick else 100_000)
        r = results["rebuild"]
        print(f"  {r['pods']} pods, {r['ledger_rows']} ledger rows: paged list (API double on the same CPUs) + read "
              f"{r['list_and_read_s']:.2f} s, compare + {r['repairs']} repairs in one transaction "
              f"{r['reconcile_s']:.2f} s; total {r['total_s']:.2f} s")
        print("scheduler: admission latency, SQLite vs PostgreSQL ...", flush=True)
        results["admission"] = admission(workdir, pairs=200 if quick else 1000)
        for label in ("sqlite", "postgresql"):
            a = results["admission"].get(label)
            if a:
                print(f"  {label:<10} validate(): mean {a['mean_ms']:.2f} ms, p50 {a['p50_ms']:.2f} ms, "
                      f"p99 {a['p99_ms']:.2f} ms")
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
