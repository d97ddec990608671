"""``python3 -m benchmarks.soak``: two gateway replicas on one PostgreSQL under steady mixed traffic.

    python3 -m benchmarks.soak                      # 5 minutes at 100 requests/s
    python3 -m benchmarks.soak --minutes 0.5        # a smoke run
    python3 -m benchmarks.soak --minutes 3 --rate 300 --users 10000

Starts a real PostgreSQL on loopback (as the tests do: tests/postgres_server.py), two
``gpu-gateway serve --database-url`` replicas on it (with signed checkpoints), and sends a
steady, open-loop stream of AdmissionReviews split evenly across both: launches of Jobs,
Deployments and Pods (some as dry runs), deletes, scales of Deployments, exec by the
owner and by someone else, ConfigMaps and pods without GPUs, from `--users` simulated
users. The soak keeps its own account of what lives in the cluster, and then checks:

* no errors: every request answered 200 with the verdict expected of it;
* resident memory of each replica, sampled every few seconds (growth after warm-up);
* p50 / p99 latency per replica;
* the ledger equal to the GPUs of the workloads the soak created and has not deleted;
* the audit chain valid (``gpu-gateway audit verify --database-url``) and consistent with
  each replica's signed checkpoints.

Prints a summary table; exits 1 when a check fails. Bounded: the traffic stops after
``--minutes`` and every wait has a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from benchmarks import payloads

REPO = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway.cli.gpu_gateway"]
TEAMS = 100
MEMORY_SAMPLE_S = 5.0
CHECKPOINT_INTERVAL_S = 10.0
JSON = {"content-type": "application/json"}


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- the cluster's account


@dataclass
class Live:
    """A workload the soak created (its answer came back allowed) and has not deleted."""

    kind: str  # job | deployment | pod
    namespace: str
    name: str
    owner: int
    gpus_each: int
    replicas: int
    obj: dict[str, Any]
    busy: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        resource = {"job": "jobs.batch", "deployment": "deployments.apps", "pod": "pods"}[self.kind]
        return resource, self.namespace, self.name

    @property
    def gpus(self) -> int:
        return self.gpus_each * self.replicas


@dataclass
class Replica:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    checkpoints: Path
    latencies: list[float] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Tally:
    sent: int = 0
    elapsed_s: float = 0.0
    by_op: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lag_max_s: float = 0.0


def _user(n: int) -> tuple[str, list[str], str]:
    team = f"team-{n % TEAMS:02d}"
    return f"user-{n:05d}", payloads.researcher_groups(team), f"ns-{n % TEAMS:02d}"


class _Bag:
    """A set with O(1) add, remove and random choice."""

    def __init__(self) -> None:
        self._items: list[Live] = []
        self._at: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Live) -> None:
        self._at[id(item)] = len(self._items)
        self._items.append(item)

    def remove(self, item: Live) -> None:
        i = self._at.pop(id(item))
        last = self._items.pop()
        if last is not item:
            self._items[i] = last
            self._at[id(last)] = i

    def pick(self, rng: random.Random) -> Live | None:
        """A random item that is not busy (a few tries), or None."""
        for _ in range(8):
            if not self._items:
                return None
            item = self._items[rng.randrange(len(self._items))]
            if not item.busy:
                return item
        return None


@dataclass
class Request:
    op: str
    body: dict[str, Any]
    allowed: bool
    """The verdict it must get."""
    apply: Any = None
    """Called when it is allowed: the change to the soak's account of the cluster."""
    target: Live | None = None
    """The workload it acts on, busy until the answer is in."""


class Traffic:
    """Chooses the next request from the live account; knows the verdict each must get."""

    def __init__(self, users: int, seed: int) -> None:
        self.users = users
        self.rng = random.Random(seed)
        self.live: dict[tuple[str, str, str], Live] = {}
        self.bags = {"job": _Bag(), "deployment": _Bag(), "pod": _Bag()}
        self.names = itertools.count()
        self.uids = itertools.count()

    def next(self) -> Request:
        roll = self.rng.random()
        if roll < 0.30:
            return self._launch(dry_run=False)
        if roll < 0.35:
            return self._launch(dry_run=True)
        if roll < 0.55:
            w = self.bags[self.rng.choice(("job", "deployment", "pod"))].pick(self.rng)
            return self._delete(w) if w else self._launch(dry_run=False)
        if roll < 0.65:
            w = self.bags["deployment"].pick(self.rng)
            return self._scale(w) if w else self._configmap()
        if roll < 0.72:
            w = self.bags["pod"].pick(self.rng)
            return self._exec(w, own=self.rng.random() < 0.8) if w else self._cpu_pod()
        if roll < 0.86:
            return self._configmap()
        return self._cpu_pod()

    def done(self, request: Request, allowed_as_expected: bool) -> None:
        if allowed_as_expected and request.allowed and request.apply is not None:
            request.apply()
        if request.target is not None:
            request.target.busy = False

    def _uid(self) -> str:
        return f"soak-{next(self.uids)}"

    def _launch(self, *, dry_run: bool) -> Request:
        n = self.rng.randrange(self.users)
        user, groups, ns = _user(n)
        name = f"w{next(self.names)}"
        kind = self.rng.choice(("job", "deployment", "pod"))
        gpus = self.rng.choice((1, 2, 4, 8))
        if kind == "job":
            replicas = self.rng.choice((1, 2))
            obj = payloads.job(name, parallelism=replicas, gpus=gpus, namespace=ns)
        elif kind == "deployment":
            replicas = self.rng.choice((1, 2, 3))
            obj = payloads.deployment(name, replicas=replicas, gpus=gpus, namespace=ns)
        else:
            replicas = 1
            obj = payloads.pod(name, gpus=gpus, namespace=ns)
        body = payloads.review(obj, user=user, groups=groups, uid=self._uid())
        body["request"]["dryRun"] = dry_run
        live = Live(kind, ns, name, n, gpus, replicas, obj)

        def apply() -> None:
            self.live[live.key] = live
            self.bags[kind].add(live)

        return Request("dry-run" if dry_run else f"launch-{kind}", body, True, None if dry_run else apply)

    def _delete(self, w: Live) -> Request:
        user, groups, _ = _user(w.owner)
        w.busy = True
        body = payloads.review(None, old=w.obj, user=user, groups=groups, operation="DELETE", uid=self._uid(),
                               name=w.name, namespace=w.namespace)

        def apply() -> None:
            self.live.pop(w.key, None)
            self.bags[w.kind].remove(w)

        return Request("delete", body, True, apply, w)

    def _scale(self, w: Live) -> Request:
        user, groups, _ = _user(w.owner)
        w.busy = True
        new = self.rng.choice([r for r in (0, 1, 2, 3, 4) if r != w.replicas])

        def scale(n: int) -> dict[str, Any]:
            return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": w.name, "namespace": w.namespace}, "spec": {"replicas": n}}

        body = payloads.review(scale(new), old=scale(w.replicas), user=user, groups=groups, operation="UPDATE",
                               uid=self._uid(), sub_resource="scale", kind=("autoscaling", "v1", "Scale"),
                               resource="deployments")
        body["request"]["resource"]["group"] = body["request"]["requestResource"]["group"] = "apps"

        def apply() -> None:
            w.replicas = new
            w.obj["spec"]["replicas"] = new

        return Request("scale", body, True, apply, w)

    def _exec(self, w: Live, *, own: bool) -> Request:
        n = w.owner if own else (w.owner + 1 + self.rng.randrange(self.users - 1)) % self.users
        user, groups, _ = _user(n)
        w.busy = True
        body = payloads.exec_review(w.name, user=user, groups=groups, uid=self._uid())
        body["request"]["namespace"] = w.namespace
        return Request("exec-own" if own else "exec-other", body, own, None, w)

    def _configmap(self) -> Request:
        user, groups, ns = _user(self.rng.randrange(self.users))
        obj = payloads.configmap(f"cm{next(self.names)}", namespace=ns)
        return Request("configmap", payloads.review(obj, user=user, groups=groups, uid=self._uid()), True)

    def _cpu_pod(self) -> Request:
        user, groups, ns = _user(self.rng.randrange(self.users))
        obj = payloads.pod(f"cpu{next(self.names)}", gpus=0, namespace=ns)
        return Request("cpu-pod", payloads.review(obj, user=user, groups=groups, uid=self._uid()), True)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL server on loopback (tests/postgres_server.py); the URL of its database."""
    sys.path.insert(0, str(REPO / "tests"))
    from postgres_server import _bin_dir, _start

    if _bin_dir() is None:
        raise SystemExit("no PostgreSQL server binaries (pg_ctl, initdb): apt-get install postgresql")
    server, root = _start()
    try:
        yield server.new_database()
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _checkpoint_flags(workdir: Path, name: str) -> tuple[list[str], Path | None]:
    key = workdir / "checkpoint.key"
    if not key.exists():
        made = subprocess.run([*GATEWAY, "audit", "keygen", "--out", str(key)], capture_output=True, timeout=60)
        if made.returncode != 0:
            return [], None
    directory = workdir / f"checkpoints-{name}"
    return ["--checkpoint-key", str(key), "--checkpoint-dir", str(directory),
            "--checkpoint-interval", str(CHECKPOINT_INTERVAL_S), "--checkpoint-replica", name], directory


def start_replica(workdir: Path, name: str, database_url: str) -> Replica:
    port = _free_port()
    home = workdir / name
    home.mkdir()
    flags, checkpoints = _checkpoint_flags(workdir, name)
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*GATEWAY, "serve", "--host", "127.0.0.1", "--port", str(port), "--insecure-http",
                                 "--state", str(home / "state.db"), "--database-url", database_url, *flags],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    replica = Replica(name, f"http://127.0.0.1:{port}", proc, log, checkpoints or Path())
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"replica {name} exited at start:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{replica.url}/readyz", timeout=1).status_code == 200:
                return replica
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"replica {name} did not become ready")
        time.sleep(0.2)


def stop_replica(replica: Replica) -> int:
    if replica.proc.poll() is None:
        replica.proc.send_signal(signal.SIGTERM)
    try:
        return replica.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        replica.proc.kill()
        return -9


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- the traffic


async def drive(replicas: list[Replica], traffic: Traffic, tally: Tally, *, seconds: float, rate: float,
                concurrency: int) -> None:
    clients = [httpx.AsyncClient(base_url=r.url, timeout=15,
                                 limits=httpx.Limits(max_connections=concurrency // len(replicas) + 1))
               for r in replicas]
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    stop = asyncio.Event()

    async def sample_memory() -> None:
        while not stop.is_set():
            now = time.monotonic() - started
            for r in replicas:
                with contextlib.suppress(OSError):
                    r.rss_mb.append((now, rss_mb(r.proc.pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MEMORY_SAMPLE_S)

    async def one(i: int, request: Request) -> None:
        replica, client = replicas[i % len(replicas)], clients[i % len(replicas)]
        body, op, as_expected = request.body, request.op, False
        try:
            t0 = time.perf_counter()
            r = await client.post("/validate", content=orjson.dumps(body), headers=JSON)
            replica.latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                tally.errors.append(f"{op} on {replica.name}: HTTP {r.status_code} {r.text[:200]}")
                return
            answer = orjson.loads(r.content)["response"]
            warnings = answer.get("warnings") or []
            if answer.get("uid") != body["request"]["uid"]:
                tally.errors.append(f"{op} on {replica.name}: uid not echoed")
            elif answer["allowed"] != request.allowed or any("gpu-gateway:" in w for w in warnings):
                tally.unexpected.append(f"{op} on {replica.name}: allowed={answer['allowed']} "
                                        f"{answer.get('status', {}).get('message', '')[:160]} {warnings[:1]}")
            else:
                as_expected = True
        except httpx.HTTPError as exc:
            tally.errors.append(f"{op} on {replica.name}: {type(exc).__name__}: {exc}")
        finally:
            traffic.done(request, as_expected)
            gate.release()

    memory = asyncio.create_task(sample_memory())
    tasks: set[asyncio.Task[None]] = set()
    try:
        for i in itertools.count():
            due = started + i / rate
            if due - started >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                tally.lag_max_s = max(tally.lag_max_s, -delay)
            await gate.acquire()
            request = traffic.next()
            tally.sent += 1
            tally.by_op[request.op] = tally.by_op.get(request.op, 0) + 1
            task = asyncio.create_task(one(i, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        tally.elapsed_s = time.monotonic() - started
    finally:
        stop.set()
        await memory
        for c in clients:
            await c.aclose()


# --------------------------------------------------------------------------- checks


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def ledger_check(database_url: str, traffic: Traffic) -> tuple[bool, str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT resource, namespace, name, gpus FROM reservations WHERE gpus > 0").fetchall()
    ledger = {(r[0], r[1], r[2]): int(r[3]) for r in rows}
    expected = {w.key: w.gpus for w in traffic.live.values() if w.gpus > 0}
    if ledger == expected:
        return True, f"{sum(ledger.values())} GPUs in {len(ledger)} workloads, as tracked"
    missing = {k: v for k, v in expected.items() if ledger.get(k) != v}
    extra = {k: v for k, v in ledger.items() if k not in expected}
    return False, (f"ledger {sum(ledger.values())} GPUs / tracked {sum(expected.values())}; "
                   f"differ: {list(missing.items())[:3]} extra: {list(extra.items())[:3]}")


def audit_check(database_url: str) -> tuple[bool, str]:
    out = subprocess.run([*GATEWAY, "audit", "verify", "--database-url", database_url],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    return out.returncode == 0, (out.stdout or out.stderr).strip().splitlines()[-1][:160]


def checkpoint_check(database_url: str, replica: Replica, public_key: Path) -> tuple[bool, str]:
    out = subprocess.run([*GATEWAY, "audit", "verify", "--database-url", database_url,
                          "--checkpoints", str(replica.checkpoints), "--public-key", str(public_key)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = (out.stdout or out.stderr).strip().splitlines()
    return out.returncode == 0, (lines[-1] if lines else "")[:160]


def memory_growth(replica: Replica, warmup_s: float) -> tuple[float, float, float, float]:
    """(MiB after warm-up, half way, at the end, growth MiB): medians of a few samples each."""
    samples = [mb for t, mb in replica.rss_mb if t >= warmup_s] or [mb for _, mb in replica.rss_mb]
    if not samples:
        return 0.0, 0.0, 0.0, 0.0
    k = max(1, min(3, len(samples) // 4))
    half = len(samples) // 2
    first, last = statistics.median(samples[:k]), statistics.median(samples[-k:])
    middle = statistics.median(samples[max(0, half - k // 2): half - k // 2 + k])
    return first, middle, last, last - first


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="traffic duration (default 5)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, both replicas together")
    parser.add_argument("--users", type=int, default=10_000, help="simulated users")
    parser.add_argument("--concurrency", type=int, default=128, help="most requests in flight")
    parser.add_argument("--max-rss-growth-mb", type=float, default=40.0,
                        help="fail when a replica's resident memory grows more than this after warm-up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, checkpoints)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120:
        parser.error("--minutes must be in (0, 120]")
    if not 0 < args.rate <= 5000:
        parser.error("--rate must be in (0, 5000]")
    if args.users < 2:
        parser.error("--users must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-gateway-soak-"))
    seconds = args.minutes * 60
    say(f"soak: {seconds:.0f} s at {args.rate:g} req/s from {args.users} users on 2 replicas (work dir {workdir})")
    replicas: list[Replica] = []
    traffic = Traffic(args.users, args.seed)
    tally = Tally()
    exits: list[int] = []
    try:
        with postgres() as database_url:
            replicas = [start_replica(workdir, f"replica-{i}", database_url) for i in (1, 2)]
            asyncio.run(drive(replicas, traffic, tally, seconds=seconds, rate=args.rate,
                              concurrency=args.concurrency))
            exits = [stop_replica(r) for r in replicas]
            checks: list[tuple[str, bool, str]] = []
            checks.append(("no errors", not tally.errors,
                           f"{tally.sent} requests, {len(tally.errors)} errors" +
                           (f"; first: {tally.errors[0]}" if tally.errors else "")))
            checks.append(("expected verdicts", not tally.unexpected,
                           f"{len(tally.unexpected)} unexpected" +
                           (f"; first: {tally.unexpected[0]}" if tally.unexpected else "")))
            steady = tally.sent / max(tally.elapsed_s, 1e-9) >= 0.9 * args.rate
            checks.append(("steady rate", steady,
                           f"{tally.sent / max(tally.elapsed_s, 1e-9):.1f} req/s of {args.rate:g} offered "
                           f"(generator lag at most {tally.lag_max_s:.1f} s)"))
            checks.append(("clean shutdown", all(e == 0 for e in exits), f"exit codes {exits}"))
            warmup = min(30.0, seconds / 5)
            for r in replicas:
                first, middle, last, growth = memory_growth(r, warmup)
                checks.append((f"memory {r.name}", growth <= args.max_rss_growth_mb,
                               f"RSS {first:.1f} -> {middle:.1f} -> {last:.1f} MiB ({growth:+.1f} MiB after "
                               f"{warmup:.0f} s warm-up, {len(r.rss_mb)} samples)"))
            checks.append(("ledger = live workloads", *ledger_check(database_url, traffic)))
            checks.append(("audit chain", *audit_check(database_url)))
            public_key = workdir / "checkpoint.key.pub"
            for r in replicas:
                if r.checkpoints != Path() and public_key.exists():
                    checks.append((f"checkpoints {r.name}", *checkpoint_check(database_url, r, public_key)))
            _report(args, replicas, traffic, tally, checks, seconds)
            return 0 if all(ok for _, ok, _ in checks) else 1
    finally:
        for r in replicas:
            stop_replica(r)
        if args.keep:
            say(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _report(args: argparse.Namespace, replicas: list[Replica], traffic: Traffic, tally: Tally,
            checks: list[tuple[str, bool, str]], seconds: float) -> None:
    say()
    say(f"mix: {', '.join(f'{k} {v}' for k, v in sorted(tally.by_op.items()))}")
    say(f"offered {args.rate:g} req/s for {seconds:.0f} s; sent {tally.sent} in {tally.elapsed_s:.0f} s "
        f"({tally.sent / max(tally.elapsed_s, 1e-9):.1f} req/s); "
        f"generator lag at most {tally.lag_max_s * 1000:.0f} ms; "
        f"live workloads at the end: {len(traffic.live)}")
    say()
    say(f"{'replica':<12} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in replicas:
        say(f"{r.name:<12} {len(r.latencies):>9} {_pct(r.latencies, 0.50):>8.1f} {_pct(r.latencies, 0.99):>8.1f} "
            f"{max(r.latencies, default=0) * 1000:>8.1f}")
    say()
    width = max(len(name) for name, _, _ in checks)
    for name, ok, detail in checks:
        say(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    say()
    say("soak passed" if all(ok for _, ok, _ in checks) else "soak FAILED")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
