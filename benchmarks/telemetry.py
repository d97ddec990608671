"""``python3 -m benchmarks.telemetry``: node agent telemetry, gateway and agent side.

    python3 -m benchmarks.telemetry              # full run (about 1 minute)
    python3 -m benchmarks.telemetry --quick      # smoke run (about 15 s)
    python3 -m benchmarks.telemetry --agent-only [--nvml]   # the agent's CPU cost only (real NVML with --nvml)

Gateway: a real `gpu-gateway serve` (TLS, HS256 bearer tokens, SQLite `synchronous=FULL`)
with 1,000 PyTorchJobs of 8 GPUs admitted through /validate (one per node, its 8 pods
created by the training operator). 1,000 simulated nodes x 8 GPUs each send one report per
10 s (100 reports/s = 800 samples/s offered): the paced phase replays that schedule and
reports the samples/s stored and the latency; the closed-loop phase sends as fast as 32
connections allow, for the ceiling.

Agent: the agent's own loop (read the device table, parse each process's cgroup, map pods,
build the report, spool it with fsync, send it over HTTPS) for N ticks of 8 GPUs with
1 process each, as CPU seconds of the agent process per sample. With --nvml, the device
source is the real NVML (so its calls are included) and nothing is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

NODES, GPUS, PERIOD_S = 1000, 8, 10.0
SECRET = "benchmark-secret-0123456789abcdef0123456789"
AGENT = "system:serviceaccount:gpu-gateway:gpu-gateway-agent"
OPERATOR = "system:serviceaccount:kubeflow:training-operator"


def say(text: str = "") -> None:
    print(text, flush=True)


def _token(sub: str, groups: list[str]) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "bench", "aud": "bench", "sub": sub, "groups": groups, "iat": now,
                       "exp": now + 3600}, SECRET, algorithm="HS256")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gateway(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    (tmp / "secret").write_text(SECRET)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.gpu_gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--state", str(tmp / "state.db"), "--jwt-secret-file", str(tmp / "secret"), "--jwt-issuer", "bench",
         "--jwt-audience", "bench", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"))  # noqa: SIM115 - lives with the server
    cert = tmp / "tls" / "tls.crt"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited: {(tmp / 'server.log').read_text()}")
        try:
            if cert.exists():
                httpx.get(f"https://127.0.0.1:{port}/healthz", verify=str(cert), timeout=1).raise_for_status()
                return proc, f"https://127.0.0.1:{port}", str(cert)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("gateway did not start")
        time.sleep(0.1)


def _review(obj: dict[str, Any], user: str, groups: list[str], resource: tuple[str, str, str]) -> dict[str, Any]:
    group, version, plural = resource
    meta = obj["metadata"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"{plural}-{meta['name']}", "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": plural},
        "namespace": meta["namespace"], "name": meta["name"], "operation": "CREATE",
        "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]}, "object": obj}}


def _admissions(nodes: int) -> list[dict[str, Any]]:
    out = []
    for n in range(nodes):
        owner = f"user{n % 100}"
        container = {"name": "pytorch", "image": "ghcr.io/lab/llm:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}
        job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": f"llm-{n}",
               "namespace": "research"}, "spec": {"pytorchReplicaSpecs": {"Worker": {
                   "replicas": GPUS, "template": {"spec": {"containers": [container]}}}}}}
        out.append(_review(job, owner, ["gpu-researchers", "team:t" + str(n % 10)],
                           ("kubeflow.org", "v1", "pytorchjobs")))
        for g in range(GPUS):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"llm-{n}-worker-{g}", "namespace": "research",
                "annotations": {"gpu-gateway.io/owner": owner, "gpu-gateway.io/team": "t" + str(n % 10)}},
                "spec": {"containers": [container]}}
            out.append(_review(pod, OPERATOR, ["system:serviceaccounts"], ("", "v1", "pods")))
    return out


def _seed(state: Path, reviews: list[dict[str, Any]]) -> None:
    """Admit the workloads through the admission service on the state file the server then opens."""
    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder, default_policy_dir
    from gateway.service import AdmissionService
    from gateway.store.sqlite import SQLiteStore

    store = SQLiteStore(state, synchronous="OFF")
    service = AdmissionService(PolicyHolder(default_policy_dir()), store, metrics=Metrics())
    for body in reviews:
        answer = service.validate(body)["response"]
        if not answer["allowed"]:
            raise SystemExit(f"admission refused: {answer}")
    store.close()


def _node_report(n: int, ts: float) -> bytes:
    samples = [{
        "uuid": f"GPU-{n:05d}-{g}", "index": g, "model": "NVIDIA H100 80GB HBM3", "ts": ts, "interval_s": PERIOD_S,
        "utilization": 90.0 + g, "memory_used_bytes": 60 * 2**30, "memory_total_bytes": 80 * 2**30,
        "power_w": 650.0, "temperature_c": 60.0, "ecc_corrected": 0, "ecc_uncorrected": 0, "xid_errors": [],
        "processes": [{"pid": 4000 + g, "used_memory_bytes": 60 * 2**30, "pod_uid": f"uid-{n}-{g}",
                       "container_id": "c" * 64, "pod": {"namespace": "research", "name": f"llm-{n}-worker-{g}"}}],
        "allocated": {"namespace": "research", "name": f"llm-{n}-worker-{g}"}, "error": ""} for g in range(GPUS)]
    return json.dumps([{"node": f"node-{n:04d}", "samples": samples}]).encode()


async def _paced(url: str, cert: str, nodes: int, seconds: float, speedup: float) -> dict[str, float]:
    """Each node reports every PERIOD_S/speedup seconds, spread evenly, for `seconds`."""
    headers = {"authorization": f"Bearer {_token(AGENT, [])}", "content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    ts0 = time.time() - 3600
    period = PERIOD_S / speedup
    rounds = max(1, int(seconds / period))
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, verify=cert, timeout=30, limits=limits) as client:
        async def one(n: int, r: int) -> None:
            nonlocal errors
            at = start + r * period + n * period / nodes
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            sent = time.perf_counter()
            response = await client.post("/api/v1/telemetry", content=_node_report(n, ts0 + r * PERIOD_S),
                                         headers=headers)
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 200:
                errors += 1
        await asyncio.gather(*(one(n, r) for r in range(rounds) for n in range(nodes)))
    elapsed = time.monotonic() - start
    latencies.sort()
    return {"reports": len(latencies), "samples": len(latencies) * GPUS, "seconds": elapsed,
            "samples_per_s": len(latencies) * GPUS / elapsed, "offered_samples_per_s": nodes * GPUS / period,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "errors": errors}


async def _closed_loop(url: str, cert: str, nodes: int, seconds: float, concurrency: int = 32) -> dict[str, float]:
    headers = {"authorization": f"Bearer {_token(AGENT, [])}", "content-type": "application/json"}
    done = 0
    stop = time.monotonic() + seconds
    ts0 = time.time() - 7200
    async with httpx.AsyncClient(base_url=url, verify=cert, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker(w: int) -> None:
            nonlocal done
            r = 0
            while time.monotonic() < stop:
                n = (w * 997 + r) % nodes
                response = await client.post("/api/v1/telemetry", content=_node_report(n, ts0 + r * 0.001 + w),
                                             headers=headers)
                if response.status_code == 200:
                    done += 1
                r += 1
        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"samples_per_s": done * GPUS / elapsed, "reports": done}


def gateway_bench(quick: bool) -> dict[str, Any]:
    nodes = 100 if quick else NODES
    with tempfile.TemporaryDirectory(prefix="gpu-gateway-telemetry-") as d:
        tmp = Path(d)
        started = time.monotonic()
        _seed(tmp / "state.db", _admissions(nodes))
        say(f"admitted {nodes} PyTorchJobs and {nodes * GPUS} pods in {time.monotonic() - started:.1f} s")
        proc, url, cert = _start_gateway(tmp)
        try:
            paced = asyncio.run(_paced(url, cert, nodes, 4 if quick else 20, speedup=1.0))
            say(f"paced ({nodes} nodes x {GPUS} GPUs, one report per node per {PERIOD_S:g} s): "
                f"{paced['samples_per_s']:.0f} samples/s stored of {paced['offered_samples_per_s']:.0f} offered, "
                f"p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms, {paced['errors']} errors")
            closed = asyncio.run(_closed_loop(url, cert, nodes, 3 if quick else 10))
            say(f"closed loop (32 connections): {closed['samples_per_s']:.0f} samples/s stored")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"nodes": nodes, "paced": paced, "closed_loop": closed}


def agent_bench(quick: bool, nvml: bool) -> dict[str, Any]:
    from gateway.telemetry.agent.agent import Agent
    from gateway.telemetry.agent.nvml import PynvmlSource
    from gateway.telemetry.agent.pods import ProcCgroups, StaticPods
    from gateway.telemetry.agent.reporter import Reporter, Spool, TokenFile
    from gateway.telemetry.agent.simulate import ScriptedSource, parse_simulation

    ticks = 50 if quick else 300
    cid = "4e1f7c9a0b2d3e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f"
    uids = [f"0b6c3f4e-7d2a-4c1b-9e8f-5a6b7c8d9e{g:02d}" for g in range(GPUS)]
    sim = parse_simulation({"node": "bench-node", "ticks": ticks, "pods": {
        u: {"namespace": "research", "name": f"llm-0-worker-{g}"} for g, u in enumerate(uids)}, "gpus": [
        {"uuid": f"GPU-00000-{g}", "memory_total_mib": 81559, "allocated_to": uids[g], "utilization": [90, 95],
         "power_w": 650, "temperature_c": 60, "ecc_uncorrected": 0, "processes": [{
             "pid": 4000 + g, "used_memory_mib": 60000,
             "cgroup": "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                       f"{uids[g].replace('-', '_')}.slice/cri-containerd-{cid}.scope"}]} for g in range(GPUS)]})
    scripted = ScriptedSource(sim)
    pods = StaticPods(sim.pods)
    with tempfile.TemporaryDirectory(prefix="gpu-gateway-agent-") as d:
        tmp = Path(d)
        proc = url = cert = None
        if not nvml:
            proc, url, cert = _start_gateway(tmp)
        try:
            (tmp / "token").write_text(_token(AGENT, []))
            spool = Spool(tmp / "spool")
            reporter = Reporter(url or "https://127.0.0.1:9", TokenFile(tmp / "token"), spool, verify=cert or False)
            source: Any = PynvmlSource() if nvml else scripted
            cgroups: Any = ProcCgroups() if nvml else scripted
            agent = Agent("bench-node", source, cgroups, pods, None, None, interval_s=PERIOD_S,
                          allocations=None if nvml else scripted.allocations)
            samples = 0
            before = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.perf_counter()
            for n in range(ticks):
                report = agent.sample(time.time() - 3600 + n)
                if report is None:
                    continue
                samples += len(report["samples"])
                if nvml:
                    spool.put(report)  # no gateway on a GPU machine: spool only
                    spool.remove([p for p, _ in spool.oldest(1)])
                else:
                    reporter.spool.put(report)
                    reporter.send_once()
            after = resource.getrusage(resource.RUSAGE_SELF)
            elapsed = time.perf_counter() - wall
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            source.close()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    per_sample_us = 1e6 * cpu / max(samples, 1)
    gpus = max(samples // max(ticks, 1), 1)
    say(f"agent ({'real NVML' if nvml else 'scripted device table'}, {gpus} GPUs, {ticks} ticks"
        f"{', spool only' if nvml else ', spool + HTTPS send'}): {per_sample_us:.0f} µs CPU per sample, "
        f"{elapsed / max(ticks, 1) * 1000:.2f} ms wall per tick; at one sample per {PERIOD_S:g} s per GPU that is "
        f"{100 * cpu / max(ticks, 1) / PERIOD_S:.3f}% of one core")
    return {"ticks": ticks, "samples": samples, "cpu_s": cpu, "cpu_us_per_sample": per_sample_us, "nvml": nvml}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.telemetry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--agent-only", action="store_true")
    parser.add_argument("--nvml", action="store_true", help="the agent reads the real GPUs (needs a driver)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    say(f"gpu-gateway telemetry benchmark on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    results: dict[str, Any] = {}
    if not args.agent_only:
        results["gateway"] = gateway_bench(args.quick)
    results["agent"] = agent_bench(args.quick, args.nvml)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
