"""Scheduler-shim figures, in one run (`python3 -m benchmarks --scheduler`, or `python3 -m benchmarks.scheduler`):

1. deciding and releasing one 4,096-pod gang: the queue pass in the store (pure core +
   one transaction), then a whole controller pass over loopback HTTP against the API server
   test double (tests/k8s_api_double.py) in a process of its own (benchmarks/api_double.py):
   list, decide, and 4,096 PATCHes removing the gate, each acknowledged; beside it, the same
   PATCHes sent to the double by a lean client (the double's own floor), and each side's CPU;
2. rebuilding the ledger from 100,000 pods: list them (paged, raw JSON) from the double in
   its own process, read them, compare with 100,000 ledger rows and repair (finished,
   missed DELETEs, unaccounted pods) in one transaction;
3. admission latency (`AdmissionService.validate`, launch + delete pairs) on SQLite and on
   PostgreSQL (a server started on loopback, as the tests do), same policy, same requests.

Figures are wall-clock on this machine, printed and returned as a dict; `summary` gives
the rows with the goals (1 s for the gang, 10 s for the rebuild).
"""

from __future__ import annotations

import http.client
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

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


GANG_KEY = "jobs.batch/research/big"
GANG_PODS = 4096
GANG_GOAL_S = 1.0
"""The whole controller pass releasing a `GANG_PODS`-pod gang, every PATCH acknowledged."""
REBUILD_PODS = 100_000
REBUILD_GOAL_S = 10.0
"""Ledger rebuilt from `REBUILD_PODS` pods: paged list and read, compare, repairs."""


def seed_gang(double: Any, pods: int) -> None:
    """The API server double's side of `gang`: one GPU node and the gang's `pods` gated pods."""
    double.add_node("gpu", pods)
    for i in range(pods):
        double.add_pod(_pod(f"big-{i}", "research", gpus=1, owner="lena", workload=GANG_KEY, gated=True),
                       phase="Pending")


def _rebuild_case(i: int) -> tuple[str, str, str, bool, bool]:
    """Pod `i` of the rebuild: (namespace, name, phase, in the ledger, in the cluster)."""
    # 1 in 100: a running pod the ledger never saw; 1 in 100: a missed DELETE; 1 in 10 finished.
    return f"ns-{i % 100}", f"p-{i}", "Succeeded" if i % 10 == 0 else "Running", i % 100 != 1, i % 100 != 2


def seed_rebuild(double: Any, pods: int) -> None:
    """The API server double's side of `rebuild`: the pods that exist."""
    for i in range(pods):
        ns, name, phase, _, listed = _rebuild_case(i)
        if listed:
            double.pods[(ns, name)] = _pod(name, ns, gpus=8, owner=f"user-{i % 500}", phase=phase)
    double.rv += 1


def gang(workdir: Path, pods: int = GANG_PODS) -> dict[str, Any]:
    """Decide and release one gang of `pods` pods (1 GPU each) admitted in queue mode."""
    _tests_path()
    from benchmarks.api_double import running
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
        key = GANG_KEY
        if phase == "decide":
            started = time.perf_counter()
            result = store.run_queue(limits_from(policies.policy, 100_000), now=time.time(),
                                     actor=Actor("bench"), pods_seen={key: pods})
            out["decide_s"] = time.perf_counter() - started
            assert len(result.plan.released) == 1
        else:
            with running("gang", pods) as double:
                cluster = Cluster(api_client(host=double.url))
                ctl = Controller(cluster, store, policies, ControllerSettings(interval_s=0))
                cpu, double_cpu = _cpu_s(), double.cpu_s()
                started = time.perf_counter()
                ctl.lease.acquire(time.time())
                result = ctl.sync(wait_s=0)
                out["controller_pass_s"] = time.perf_counter() - started
                out["controller_cpu_us_per_pod"] = (_cpu_s() - cpu) / pods * 1e6
                after = double.cpu_s()
                if double_cpu is not None and after is not None:
                    out["double_cpu_us_per_pod"] = (after - double_cpu) / pods * 1e6
                assert len(result.plan.released) == 1
                listed, _ = cluster.list_pods()
                out["ungated"] = sum(1 for p in listed if not p["spec"].get("schedulingGates"))
                assert out["ungated"] == pods, out
        store.close()
    return out


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def api_floor(pods: int = GANG_PODS, connections: int | None = None) -> dict[str, Any]:
    """The double alone: the gang's `pods` gate removals sent by a lean client (http.client,
    `connections` kept-alive connections kept busy from one thread; by default as many as
    the controller keeps in flight), no controller."""
    from benchmarks.api_double import running
    from gateway.admission.workloads import GpuMatcher
    from gateway.kube import POOL_CONNECTIONS
    from gateway.scheduling.reconcile import gate_removal_patch, read_pod

    with running("gang", pods) as double:
        host, port = double.url.removeprefix("http://").split(":")
        conns = [http.client.HTTPConnection(host, int(port)) for _ in range(min(connections or POOL_CONNECTIONS, pods))]
        todo = iter(range(pods))
        sent: deque[http.client.HTTPConnection] = deque()
        headers = {"Content-Type": "application/json-patch+json", "Accept": "application/json"}
        view = read_pod(_pod("big-0", "research", gpus=1, owner="lena", workload=GANG_KEY, gated=True), GpuMatcher())
        assert view is not None
        body = orjson.dumps(gate_removal_patch(view))

        def send(conn: http.client.HTTPConnection) -> None:
            for i in todo:
                conn.request("PATCH", f"/api/v1/namespaces/research/pods/big-{i}", body, headers)
                sent.append(conn)
                return

        cpu, started = double.cpu_s(), time.perf_counter()
        for conn in conns:
            send(conn)
        while sent:
            conn = sent.popleft()
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200, answer.status
            send(conn)
        out: dict[str, Any] = {"pods": pods, "connections": len(conns), "seconds": time.perf_counter() - started}
        after = double.cpu_s()
        if cpu is not None and after is not None:
            out["double_cpu_us_per_pod"] = (after - cpu) / pods * 1e6
        for conn in conns:
            conn.close()
    return out


def rebuild(workdir: Path, pods: int = REBUILD_PODS) -> dict[str, Any]:
    """Rebuild the ledger from `pods` pods: list, read, compare with the ledger, repair."""
    from benchmarks.api_double import running
    from gateway.admission.ports import Actor
    from gateway.kube import Cluster, api_client
    from gateway.policy_bundle import PolicyHolder
    from gateway.scheduling.controller.loop import Controller, ControllerSettings
    from gateway.store.sqlite import SQLiteStore

    store = SQLiteStore(workdir / "rebuild.db")
    policies = PolicyHolder(ROOT / "policies")
    cases = [_rebuild_case(i) for i in range(pods)]
    rows = [("pods", ns, name, f"user-{i % 500}", f"team-{i % 50}", "researcher", 8, 1, "{}", 0.0, "")
            for i, (ns, name, _, held, _) in enumerate(cases) if held]

    def seed(ledger: Any) -> None:
        for row in rows:
            ledger.db.run("INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, "
                          "shape, created_at, request_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        ledger.rebuild_usage()
    store._write(seed)
    out: dict[str, Any] = {"pods": sum(1 for c in cases if c[4]), "ledger_rows": len(rows)}
    with running("rebuild", pods) as double:
        ctl = Controller(Cluster(api_client(host=double.url)), store, policies, ControllerSettings(interval_s=0))
        started = time.perf_counter()
        ctl.pods.relist()  # list + read (the controller's own path)
        out["list_and_read_s"] = time.perf_counter() - started
    views = ctl.pods.views()
    started = time.perf_counter()
    repairs = store.reconcile(views, now=time.time(), actor=Actor("bench"))
    out["reconcile_s"] = time.perf_counter() - started
    out["repairs"] = len(repairs)
    out["total_s"] = out["list_and_read_s"] + out["reconcile_s"]
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


def run(*, quick: bool = False, say: Any = print) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="gpu-gateway-sched-bench-"))
    try:
        results: dict[str, Any] = {"quick": quick}
        pods = 512 if quick else GANG_PODS
        say(f"scheduler: one {pods:,}-pod gang (API server double in its own process) ...")
        results["gang"] = gang(workdir, pods=pods)
        g = results["gang"]
        results["api_floor"] = api_floor(pods)
        f = results["api_floor"]
        say(f"  decide + release in the store: {g['decide_s'] * 1e3:.1f} ms; whole controller pass "
            f"(list, decide, {g['pods']:,} gate-removal PATCHes, each acknowledged): {g['controller_pass_s']:.2f} s; "
            f"CPU per pod: controller {g['controller_cpu_us_per_pod']:.0f} us, double "
            f"{g.get('double_cpu_us_per_pod', float('nan')):.0f} us")
        say(f"  the double alone, the same PATCHes from a lean client ({f['connections']} connections): "
            f"{f['seconds']:.2f} s, its CPU {f.get('double_cpu_us_per_pod', float('nan')):.0f} us per PATCH")
        pods = 10_000 if quick else REBUILD_PODS
        say(f"scheduler: ledger rebuild from {pods:,} pods (API server double in its own process) ...")
        results["rebuild"] = rebuild(workdir, pods=pods)
        r = results["rebuild"]
        say(f"  {r['pods']:,} pods, {r['ledger_rows']:,} ledger rows: paged list + read {r['list_and_read_s']:.2f} s, "
            f"compare + {r['repairs']:,} repairs in one transaction {r['reconcile_s']:.2f} s; "
            f"total {r['total_s']:.2f} s")
        say("scheduler: admission latency, SQLite vs PostgreSQL ...")
        results["admission"] = admission(workdir, pairs=200 if quick else 1000)
        for label in ("sqlite", "postgresql"):
            a = results["admission"].get(label)
            if a:
                say(f"  {label:<10} validate(): mean {a['mean_ms']:.2f} ms, p50 {a['p50_ms']:.2f} ms, "
                    f"p99 {a['p99_ms']:.2f} ms")
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Summary rows (as benchmarks.__main__ prints them) of `run`'s results. A quick run's
    sizes are below the goals': its rows carry no PASS/FAIL."""
    rows: list[dict[str, Any]] = []

    def row(figure: str, value: str, baseline: str = "", ratio: float | None = None, goal: str = "",
            ok: bool | None = None) -> None:
        if results.get("quick"):
            ok = None
        rows.append({"figure": figure, "value": value, "baseline": baseline,
                     "ratio": None if ratio is None else round(ratio, 3), "goal": goal,
                     "result": "" if ok is None else ("PASS" if ok else "FAIL")})

    g, f, r = results["gang"], results["api_floor"], results["rebuild"]
    row(f"controller: {g['pods']:,}-pod gang released, every PATCH acknowledged", f"{g['controller_pass_s']:.2f} s",
        f"the double alone {f['seconds']:.2f} s", g["controller_pass_s"] / f["seconds"],
        f"<= {GANG_GOAL_S:g} s at {GANG_PODS:,} pods", g["controller_pass_s"] <= GANG_GOAL_S)
    row("queue pass deciding that gang (one store transaction)", f"{g['decide_s'] * 1e3:.1f} ms")
    row(f"ledger rebuilt from {r['pods']:,} pods (list + read, compare, {r['repairs']:,} repairs)",
        f"{r['total_s']:.2f} s", f"list + read {r['list_and_read_s']:.2f} s", None,
        f"<= {REBUILD_GOAL_S:g} s at {REBUILD_PODS:,} pods", r["total_s"] <= REBUILD_GOAL_S)
    for label in ("sqlite", "postgresql"):
        a = results["admission"].get(label)
        if a:
            row(f"validate() in-process, {label}, mean / p99", f"{a['mean_ms']:.2f} / {a['p99_ms']:.2f} ms")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
