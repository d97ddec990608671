"""POST /validate over loopback: the real gateway server against a null webhook.

Both run as separate processes on 127.0.0.1 (uvicorn, 1 worker): the gateway through
`gateway.server.run_server` as ``gpu-gateway serve`` runs it (`benchmarks.gateway_server`:
fresh SQLite state in a temp dir, the shipped policy bundle, the production defaults:
store ``synchronous=FULL``, log level INFO), the null webhook from `benchmarks.null_webhook`.
`wrk` (Debian package) sends two streams of `benchmarks.payloads` through a generated Lua
script: the realistic mix, then the all-launch stream (every request a distinct person's
8-GPU launch, admitted and charged), each in two phases per server:

* closed loop: N connections, each sending its next request when the answer arrives:
  the server's max throughput;
* open loop: a fixed offered rate (2,000 req/s), each request taking the next slot of a
  fixed schedule; many connections, so one slow answer does not delay later sends (wrk
  measures latency from the actual send; slots that started over 1 ms late are counted).

Phases alternate between the servers, so machine noise hits both alike. The load
generator shares the machine: by default the servers are pinned to CPU 0 and wrk to
CPU 1 (when there are two CPUs or more). Each wrk run also reads the server process's CPU
time (utime + stime in /proc, with any worker processes it started) before and after.

Then a launch's burst (`benchmarks.burst`): the training operator's 4,096 pod creates of one
admitted PyTorchJob, sent at once; the gateway's ledger is checked after each stream and
burst. Last, the fsync latency of the disk under the gateway's state file: with the null
webhook's p99, the floor a durable decision's p99 cannot go below.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks import burst as bursts
from benchmarks import payloads, service_bench

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class HttpBenchError(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Phase:
    server: str
    mode: str
    """`closed` or `open`."""
    connections: int
    seconds: float
    offered_rps: float | None
    requests: int
    duration_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    non200: int
    late: int
    paced: int
    verdicts: dict[str, int] = field(default_factory=dict)
    stream: str = "mix"
    tag: str = ""
    cpu_s: float | None = None
    """CPU time the server process spent during the run (None where /proc cannot say)."""

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server, "mode": self.mode, "connections": self.connections,
            "offered_rps": self.offered_rps, "requests": self.requests,
            "duration_s": round(self.duration_s, 3), "rps": round(self.rps, 1),
            "latency_ms": self.latency_ms, "errors": self.errors, "non200": self.non200,
            "late_slots": self.late, "paced_slots": self.paced, "verdicts": self.verdicts,
            "stream": self.stream, "tag": self.tag,
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
        }


def wrk_path() -> str | None:
    return shutil.which("wrk")


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, all threads) of process `pid` and its live descendants, from
    /proc; None where it cannot be read (not Linux, or the process is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, root = 0.0, [pid], True
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except (OSError, IndexError):
            if root:
                return None
            continue  # a worker that exited meanwhile
        root = False
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15 of stat
        for task in tasks:
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def _start(name: str, argv: list[str], url: str, log: Path, cpus: set[int] | None) -> Server:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    out = log.open("wb")
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    out.close()
    _pin(process.pid, cpus)
    server = Server(name, process, url, log)
    try:
        _wait_healthy(server)
    except BaseException:
        _stop(server)
        raise
    return server


def _wait_healthy(server: Server, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(verify=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise HttpBenchError(f"{server.name} server exited with {server.process.returncode}:\n"
                                     f"{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(server.url + "/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise HttpBenchError(f"{server.name} server did not become healthy in {timeout_s:.0f} s:\n{server.log_tail()}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


def gateway_name(synchronous: str) -> str:
    return "gateway" if synchronous == "FULL" else f"gateway-{synchronous.lower()}"


@contextlib.contextmanager
def servers(workdir: Path, *, tls: bool, log_level: str, pin: bool,
            synchronous: tuple[str, ...] = ("FULL",)) -> Iterator[list[Server]]:
    """Start the null webhook and one gateway per store `synchronous` setting; stop all on exit.

    Each gateway has its own fresh state file. Yields [null, gateway, ...].
    """
    cpus = {0} if pin else None
    scheme = "https" if tls else "http"
    tls_args: list[str] = []
    if tls:
        from gateway.webhook.tls import ensure_self_signed

        cert, key = ensure_self_signed(workdir / "tls", ["127.0.0.1", "localhost"])
        tls_args = ["--cert", str(cert), "--key", str(key)]
    commands = [("null", [sys.executable, "-m", "benchmarks.null_webhook", *tls_args])]
    for mode in synchronous:
        name = gateway_name(mode)
        commands.append((name, [
            sys.executable, "-m", "benchmarks.gateway_server", "--state", str(workdir / f"{name}.db"),
            "--log-level", log_level, "--synchronous", mode, *tls_args,
        ]))
    started: list[Server] = []
    try:
        for name, argv in commands:
            port = _free_port()
            started.append(_start(name, [*argv, "--port", str(port)], f"{scheme}://127.0.0.1:{port}",
                                  workdir / f"{name}.log", cpus))
        yield started
    finally:
        for server in started:
            _stop(server)


def _long_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def lua_script(path: Path, *, tag: str, rate_per_thread: float | None, stream: str = "mix") -> Path:
    """Write the wrk script for one run: the stream's templates, tag (unique names), pacing."""
    if not tag.isalnum():
        raise ValueError("tag must be alphanumeric (it prefixes uids and object names)")
    chosen = payloads.stream(stream)
    templates = ",\n".join(f"  {m.kind} = {_long_string(m.template)}" for m in chosen.kinds)
    schedule = ", ".join(f'{{"{kind}", {k}}}' for kind, k in chosen.schedule)
    interval = 1e6 / rate_per_thread if rate_per_thread else 0
    text = (HERE / "wrk.lua.in").read_text()
    for key, value in {
        "@TEMPLATES@": templates, "@SCHEDULE@": schedule, "@TAG@": tag, "@STREAM@": chosen.name,
        "@EARLY@": str(chosen.early), "@LAG@": str(payloads.MIX_LAG),
        "@NR@": str(payloads.MIX_RESEARCHERS), "@NI@": str(payloads.MIX_INTERNS),
        "@NT@": str(payloads.MIX_TEAMS), "@INTERVAL_US@": f"{interval:.3f}",
    }.items():
        text = text.replace(key, value)
    path.write_text(text)
    return path


def run_wrk(server: Server, workdir: Path, *, mode: str, tag: str, seconds: float, connections: int,
            rate: float | None = None, pin: bool = True, stream: str = "mix") -> Phase:
    """One wrk run (1 thread) of `stream` against `server`'s /validate; `rate` paces it (open loop)."""
    wrk = wrk_path()
    if wrk is None:
        raise HttpBenchError("wrk is not installed (Debian: apt-get install -y wrk)")
    most = payloads.stream(stream).max_connections
    if most is not None and connections > most:
        raise ValueError(f"at most {most} connections keep the {stream}'s lifecycle in order")
    script = lua_script(workdir / f"wrk-{tag}.lua", tag=tag, rate_per_thread=rate, stream=stream)
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(script), server.url + "/validate"]
    cpus = {1} if pin and (os.cpu_count() or 1) > 1 else None

    def preexec() -> None:
        _pin(0, cpus)

    cpu_before = process_cpu_s(server.process.pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=preexec,
                         check=False)
    cpu_after = process_cpu_s(server.process.pid)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise HttpBenchError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{server.log_tail()}")
    data = orjson.loads(line.split(" ", 1)[1])
    pct = data["latency_us"]["pct"]
    latency = {f"p{k.replace('.0', '')}": v / 1000 for k, v in pct.items()}
    latency.update(mean=data["latency_us"]["mean"] / 1000, max=data["latency_us"]["max"] / 1000)
    return Phase(
        server=server.name, mode=mode, connections=connections, seconds=seconds, offered_rps=rate,
        requests=data["requests"], duration_s=data["duration_us"] / 1e6,
        latency_ms={k: round(v, 3) for k, v in latency.items()}, errors=data["errors"],
        non200=data["non200"], late=data["late"], paced=data["paced"],
        verdicts=dict(sorted(data["verdicts"].items())), stream=stream, tag=tag,
        cpu_s=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
    )


def unexpected_verdicts(phase: Phase) -> dict[str, int]:
    """Answers of the gateway that differ from what its stream expects (kind:verdict -> count)."""
    expect = {m.kind: m.expect for m in payloads.stream(phase.stream).kinds}
    out = {}
    for key, n in phase.verdicts.items():
        kind, _, verdict = key.partition(":")
        if kind != "early" and expect.get(kind) != verdict:
            out[key] = n
    return out


def ledger_summary(state: Path) -> dict[str, int]:
    """Rows the gateway wrote: audit records and reservations still held."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        audit = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        held = db.execute("SELECT COUNT(*), COALESCE(SUM(gpus), 0) FROM reservations").fetchone()
    finally:
        db.close()
    return {"audit_rows": int(audit), "reservations": int(held[0]), "reserved_gpus": int(held[1])}


def launch_ledger(state: Path, phases: list[Phase]) -> dict[str, Any]:
    """Every launch of the all-launch `phases` is answered allowed and charged to its person.

    Each request is a person of its own, so their reservations are counted by name: at least
    one per allowed answer (wrk stops reading at its deadline, so a few answered after it are
    recorded but not counted: at most one per connection), each charged its GPUs, and the
    usage counters in step.
    """
    allowed = sum(n for p in phases for key, n in p.verdicts.items() if key.endswith(":allowed"))
    denied = sum(n for p in phases for key, n in p.verdicts.items() if not key.endswith(":allowed"))
    in_flight = sum(p.connections for p in phases)
    rows = charged = gpus = users = used = 0
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        for p in phases:
            people = payloads.launch_people(p.tag) + "%"
            n, c, g = db.execute("SELECT COUNT(*), COALESCE(SUM(charged), 0), COALESCE(SUM(gpus), 0) "
                                 "FROM reservations WHERE owner LIKE ?", (people,)).fetchone()
            u, ug = db.execute("SELECT COUNT(*), COALESCE(SUM(gpus), 0) FROM usage "
                               "WHERE scope = 'user' AND name LIKE ?", (people,)).fetchone()
            rows, charged, gpus, users, used = rows + n, charged + c, gpus + g, users + u, used + ug
    finally:
        db.close()
    ok = (not denied and allowed <= rows <= allowed + in_flight and charged == rows == users
          and gpus == used == rows * payloads.LAUNCH_GPUS)
    return {"allowed_answers": allowed, "denied_answers": denied, "reservations": rows, "charged": charged,
            "reserved_gpus": gpus, "usage_users": users, "usage_gpus": used, "ok": ok}


@dataclass(frozen=True)
class HttpPlan:
    warmup_s: float = 2.0
    closed_rounds: int = 2
    closed_s: float = 5.0
    open_rounds: int = 3
    open_s: float = 5.0
    closed_connections: int = 64
    open_connections: int = 64
    rate: float = 2000.0
    burst_pods: int = payloads.BURST_PODS
    burst_rounds: int = 3
    burst_connections: int = 128


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def aggregate(phases: list[Phase]) -> dict[str, Any]:
    """Rounds of one server and mode: total rate, median (and worst) round latency."""
    total_s = sum(p.duration_s for p in phases)
    verdicts: dict[str, int] = {}
    for p in phases:
        for key, n in p.verdicts.items():
            verdicts[key] = verdicts.get(key, 0) + n
    out: dict[str, Any] = {
        "rounds": len(phases),
        "requests": sum(p.requests for p in phases),
        "rps": sum(p.requests for p in phases) / total_s if total_s else 0.0,
        "offered_rps": phases[0].offered_rps,
        "errors": sum(sum(p.errors.values()) for p in phases),
        "non200": sum(p.non200 for p in phases),
        "late_slots": sum(p.late for p in phases),
        "paced_slots": sum(p.paced for p in phases),
        "verdicts": dict(sorted(verdicts.items())),
    }
    cpu = [p.cpu_s for p in phases]
    requests = out["requests"]
    out["cpu_us_per_request"] = (sum(c for c in cpu if c is not None) / requests * 1e6
                                 if requests and None not in cpu else None)
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        values = [p.latency_ms[key] for p in phases]
        out[f"{key}_ms"] = _median(values)
        out[f"{key}_ms_worst"] = max(values)
    return out


def burst_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one server's burst: median (and worst) round, and whether every round was right."""
    seconds = [r["seconds"] for r in rounds]
    return {
        "rounds": len(rounds), "pods": rounds[0]["pods"], "connections": rounds[0]["connections"],
        "client": rounds[0]["client"],
        "seconds": _median(seconds), "seconds_worst": max(seconds),
        "per_s": rounds[0]["pods"] / _median(seconds) if _median(seconds) else 0.0,
        "p50_ms": _median([r["p50_ms"] for r in rounds]),
        "p99_ms": _median([r["p99_ms"] for r in rounds]), "p99_ms_worst": max(r["p99_ms"] for r in rounds),
        "client_cpu_us": _median([r["client_cpu_us"] for r in rounds]),
        "all_allowed": all(r["allowed"] == r["pods"] for r in rounds),
        "ledger_ok": all(r["ledger"]["ok"] for r in rounds if "ledger" in r),
        "runs": rounds,
    }


def _run_stream(stream: str, started: list[Server], workdir: Path, plan: HttpPlan, *, pin: bool, label: str,
                say: Any) -> list[Phase]:
    """Closed-loop, then open-loop rounds of `stream`, rotating the servers' order."""
    prefix = "" if stream == "mix" else "l"
    width = max(len(s.name) for s in started)
    phases = []
    for mode, rounds, seconds, conns, rate in (
        ("closed", plan.closed_rounds, plan.closed_s, plan.closed_connections, None),
        ("open", plan.open_rounds, plan.open_s, plan.open_connections, plan.rate),
    ):
        for r in range(rounds):
            shift = r % len(started)
            for server in started[shift:] + started[:shift]:
                n = started.index(server)
                phase = run_wrk(server, workdir, mode=mode, tag=f"{prefix}{mode}{r}s{n}", seconds=seconds,
                                connections=conns, rate=rate, pin=pin, stream=stream)
                phases.append(phase)
                cpu = (f"  cpu {phase.cpu_s / phase.requests * 1e6:4.0f} us/req"
                       if stream == "launch" and phase.cpu_s is not None and phase.requests else "")
                say(f"  {label} {stream:6} {mode:6} {r + 1}/{rounds} {server.name:{width}} {conns} conns"
                    + (f", {rate:,.0f} req/s offered" if rate else "")
                    + f": {phase.rps:8,.0f} req/s  p50 {phase.latency_ms['p50']:7.2f} ms"
                    f"  p99 {phase.latency_ms['p99']:7.2f} ms"
                    + (f"  late slots {phase.late / max(phase.paced, 1):.1%}" if rate else "") + cpu)
    return phases


def _run_bursts(started: list[Server], workdir: Path, plan: HttpPlan, *, tls: bool, pin: bool, label: str,
                say: Any) -> dict[str, list[dict[str, Any]]]:
    """Burst rounds, rotating the servers' order; each gateway's ledger checked after its burst.
    The client runs on CPU 1 as wrk does."""
    width = max(len(s.name) for s in started)
    out: dict[str, list[dict[str, Any]]] = {}
    for r in range(plan.burst_rounds):
        burst = payloads.launch_burst(f"b{r}", plan.burst_pods)
        shift = r % len(started)
        for server in started[shift:] + started[:shift]:
            run = bursts.run_burst(server.url, burst, connections=plan.burst_connections,
                                   cpus={1} if pin else None, tls=tls)
            if server is not started[0]:
                run["ledger"] = bursts.burst_ledger(workdir / f"{server.name}.db", burst)
            out.setdefault(server.name, []).append(run)
            right = run["allowed"] == run["pods"] and run.get("ledger", {"ok": True})["ok"]
            say(f"  {label} burst  {r + 1}/{plan.burst_rounds} {server.name:{width}} {run['pods']:,} pod creates, "
                f"{run['connections']} conns: {run['seconds']:6.2f} s ({run['per_s']:,.0f}/s)"
                f"  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
                + ("all allowed" + (" and recorded under the job" if "ledger" in run else "") if right
                   else f"WRONG: {run['allowed']} allowed, ledger {run.get('ledger')}"))
    return out


def run_http(workdir: Path, plan: HttpPlan, *, tls: bool = False, log_level: str = "INFO",
             synchronous: tuple[str, ...] = ("FULL",), pin: bool = True, say: Any = print) -> dict[str, Any]:
    """Warm every server; for each stream (the mix, then all-launch) closed-loop and open-loop
    rounds, rotating the servers' order; then the burst rounds; then the state disk's fsync."""
    pin = pin and (os.cpu_count() or 1) > 1
    workdir.mkdir(parents=True, exist_ok=True)
    label = "TLS" if tls else "HTTP"
    with servers(workdir, tls=tls, log_level=log_level, pin=pin, synchronous=synchronous) as started:
        say(f"  servers up ({label}, log level {log_level}): "
            + ", ".join(f"{s.name} {s.url}" for s in started))
        for n, server in enumerate(started if plan.warmup_s > 0 else ()):
            run_wrk(server, workdir, mode="warmup", tag=f"warm{n}", seconds=plan.warmup_s,
                    connections=plan.closed_connections, pin=pin)
        phases = _run_stream("mix", started, workdir, plan, pin=pin, label=label, say=say)
        # What the mix left in each gateway's ledger, before the other phases add theirs.
        ledgers = {s.name: ledger_summary(workdir / f"{s.name}.db") for s in started[1:]}
        phases += _run_stream("launch", started, workdir, plan, pin=pin, label=label, say=say)
        burst_rounds = _run_bursts(started, workdir, plan, tls=tls, pin=pin, label=label, say=say)
        names = [s.name for s in started]
    fsync = service_bench.fsync_latency(workdir)
    say(f"  the state disk ({workdir}): write+fsync {fsync['p50_ms']:.2f} ms p50, {fsync['p99_ms']:.2f} ms p99")

    def aggregated(stream: str) -> dict[str, Any]:
        return {name: {mode: aggregate([p for p in phases if p.server == name and p.mode == mode
                                        and p.stream == stream])
                       for mode in ("closed", "open")} for name in names}

    unexpected: dict[str, dict[str, int]] = {}
    launch_ledgers = {}
    for name in names[1:]:
        bad: dict[str, int] = {}
        for p in phases:
            if p.server == name:
                for key, n in unexpected_verdicts(p).items():
                    bad[key] = bad.get(key, 0) + n
        if bad:
            unexpected[name] = bad
        launch_ledgers[name] = launch_ledger(workdir / f"{name}.db",
                                             [p for p in phases if p.server == name and p.stream == "launch"])
    return {
        "tls": tls,
        "pinned": pin,
        "log_level": log_level,
        "connections": {"closed": plan.closed_connections, "open": plan.open_connections},
        "summary": aggregated("mix"),
        "launch": aggregated("launch"),
        "burst": {name: burst_summary(rounds) for name, rounds in burst_rounds.items()},
        "fsync": fsync,
        "unexpected_gateway_verdicts": unexpected,
        "ledgers": ledgers,
        "launch_ledgers": launch_ledgers,
        "phases": [p.as_dict() for p in phases],
    }
